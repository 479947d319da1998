// Starts the dashboard: learn who we are (or ask for a token), then open the streams.

import { $, backoff } from './dom.js';
import { authEvents, postJSON, whoami } from './api.js';
import { Indicator } from './conn.js';
import { startEvents, noteServerLastId } from './events.js';
import { startStatus } from './status.js';
import { startVideo, setCameraState, setServerReachable } from './video.js';
import { startAlerts, onEvent as alertOnEvent } from './alert.js';
import { startControl } from './control.js';

// Tells js/fallback.js (which runs next) that this browser runs the dashboard.
document.documentElement.setAttribute('data-app', 'running');

let started = false;

async function boot() {
  $('login-form').addEventListener('submit', login);
  $('switch-token').addEventListener('click', () => showLogin('Sign in with another token.'));
  authEvents.addEventListener('unauthorized', () => showLogin(started ? 'Your token is no longer accepted; sign in again.' : ''));

  // A link with ?token=… (a kiosk, a bookmark) logs in once; the token then leaves the URL.
  const params = new URLSearchParams(location.search);
  if (params.has('token')) {
    const token = params.get('token');
    history.replaceState(null, '', location.pathname);
    try { await postJSON('/api/login', { token }); } catch { /* the form will ask */ }
  }

  for (let attempt = 0; ; attempt++) {
    try {
      start(await whoami());
      return;
    } catch (err) {
      if (err.status === 401) return; // the unauthorized handler shows the form
      const box = $('boot-error');
      box.hidden = false;
      box.textContent = `Cannot reach porchlight (${err.message}). Retrying…`;
      await new Promise((r) => setTimeout(r, backoff(attempt, 2000)));
    }
  }
}

function showLogin(message) {
  $('login').hidden = false;
  $('dashboard').hidden = !started;
  $('login-error').textContent = message || '';
  $('login-token').focus();
}

async function login(event) {
  event.preventDefault();
  const input = $('login-token');
  const token = input.value.trim();
  const error = $('login-error');
  if (!token) {
    error.textContent = 'Enter the token.';
    input.focus();
    return;
  }
  $('login-submit').disabled = true;
  error.textContent = '';
  try {
    await postJSON('/api/login', { token });
    input.value = '';
    // Streams already open carry the old role: start over with the new one.
    if (started) location.reload();
    else start(await whoami());
  } catch (err) {
    error.textContent = err.status === 401 ? 'That token is not valid.' : `Could not sign in: ${err.message}`;
    input.select();
  } finally {
    $('login-submit').disabled = false;
  }
}

function start(who) {
  if (started) return;
  started = true;
  $('login').hidden = true;
  $('boot-error').hidden = true;
  $('dashboard').hidden = false;
  $('conns').hidden = false;
  $('role-badge').textContent = who.role;
  $('role-badge').title = `Signed in as ${who.role}`;
  $('switch-token').hidden = !who.login_required;

  // Server unreachable: the picture is old, say so; reopen the video when it is back.
  const sse = new Indicator($('conn-sse'), ['events', 'status'],
    (state) => setServerReachable(state === 'live' || state === 'connecting'));
  const ws = new Indicator($('conn-ws'), ['ws']);

  startAlerts();
  startVideo();
  startStatus({
    indicator: sse,
    onStatus(status) {
      if (status.camera && status.camera.state) setCameraState(status.camera.state);
      if (status.events) noteServerLastId(status.events.last_id);
    },
  });
  startEvents({
    indicator: sse,
    onEvent(event) {
      if (event.event_type === 'camera_offline') setCameraState('offline');
      if (event.event_type === 'camera_online') setCameraState('streaming');
      alertOnEvent(event);
    },
  });
  startControl({ role: who.role, indicator: ws });
}

boot();
