// An EventSource that never gives up: after an error status (401, 503 over a limit) the
// browser closes it for good, so we open a new one with backoff.

import { backoff } from './dom.js';
import { whoami } from './api.js';

/**
 * `url()` gives the URL for each (re)open; `setup(source)` adds the listeners;
 * `indicator.set(part, state)` shows the state.
 */
export function keepStreaming({ url, setup, indicator, part }) {
  let source = null;
  let attempt = 0;
  let timer = null;

  const reopenLater = () => {
    clearTimeout(timer);
    timer = setTimeout(open, backoff(attempt++, 2000));
  };

  function open() {
    source = new EventSource(url());
    setup(source);
    source.addEventListener('open', () => {
      attempt = 0;
      indicator.set(part, 'live');
    });
    source.addEventListener('error', () => {
      indicator.set(part, 'reconnecting');
      if (source.readyState !== EventSource.CLOSED) return; // the browser retries itself
      // Refused: find out whether it was the token (the page then asks for one) or not.
      whoami().then(reopenLater, (err) => { if (err.status !== 401) reopenLater(); });
    });
  }

  open();
  return {
    /** Closes the stream (a hidden page does not need it); `resume()` opens it again. */
    pause() {
      clearTimeout(timer);
      source.close();
      indicator.set(part, 'live'); // not a fault: nothing to show while paused
    },
    resume() {
      if (source.readyState !== EventSource.CLOSED) return;
      clearTimeout(timer);
      indicator.set(part, 'connecting');
      open();
    },
  };
}
