// DOM and formatting helpers. Dynamic values go in as text or attribute values, never as
// markup: event data comes from external producers.

export const $ = (id) => document.getElementById(id);

/** Builds an element. `text` sets textContent; `on*` adds a listener; strings among the
 *  children become text nodes. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

/** This page's id on the server (SSE, WebSocket, video): shows in its logs. */
export const clientId = 'dash-' + Array.from(crypto.getRandomValues(new Uint8Array(6)),
  (b) => b.toString(36).padStart(2, '0')).join('').slice(0, 10);

/** Exponential backoff with jitter: about 1 s, 2 s, 4 s … up to `max` ms. */
export function backoff(attempt, base = 1000, max = 30000) {
  const full = Math.min(max, base * 2 ** Math.min(attempt, 10));
  return full / 2 + Math.random() * full / 2;
}

const ROLES = ['viewer', 'control', 'admin'];
export const roleAtLeast = (role, needed) => ROLES.indexOf(role) >= ROLES.indexOf(needed);

export function fmtBytes(n) {
  if (typeof n !== 'number') return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
}

export function fmtDuration(seconds) {
  if (typeof seconds !== 'number') return '—';
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${s % 60} s`;
  return `${s} s`;
}

/** A time of day, with the date when it is not today. */
export function fmtWhen(date) {
  const time = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  if (date.toDateString() === new Date().toDateString()) return time;
  return `${date.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}`;
}

export const num = (v, digits = 1) => (typeof v === 'number' ? v.toFixed(digits) : '—');

/** Tells screen readers something without moving focus. */
export function announce(text) {
  const region = $('announce');
  region.textContent = '';
  // A fresh text node is what makes a live region speak again.
  requestAnimationFrame(() => { region.textContent = text; });
}

/** A file name for a picture taken at `date` (local time, sortable). */
export function pictureName(prefix, date = new Date()) {
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return `${prefix}-${local.toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '-')}.jpg`;
}

/** A server path we are willing to load a picture from (same origin, absolute path). */
export const isLocalPath = (url) => typeof url === 'string' && url.startsWith('/') && !url.startsWith('//');
