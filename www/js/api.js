// JSON over fetch, with the contract's error shape turned into exceptions, and one place that
// tells the page when the server wants a token (401).

export class HttpError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

/** Fires `unauthorized` when any request is answered 401. */
export const authEvents = new EventTarget();

async function parse(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: keep null */ }
  if (response.status === 401) authEvents.dispatchEvent(new Event('unauthorized'));
  if (!response.ok) {
    throw new HttpError(response.status, body && body.error, body && body.message);
  }
  return body;
}

export const getJSON = async (url) => parse(await fetch(url, { headers: { Accept: 'application/json' }, cache: 'no-store' }));

export const postJSON = async (url, value) => parse(await fetch(url, {
  method: 'POST',
  headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
  body: JSON.stringify(value),
}));

/** Who this page is to the server: `{role, login_required}`, or throws (401 → HttpError). */
export const whoami = () => getJSON('/api/whoami');
