// Controls over the WebSocket (/ws): ring the test doorbell, restart the camera, set the
// default quality. Reconnects with backoff; a ping notices a link TCP would not (Wi-Fi gone
// without a FIN). Buttons the role may not use are disabled and say why.

import { $, backoff, clientId, roleAtLeast } from './dom.js';

const COMMAND_TIMEOUT_MS = 10000;
const PING_EVERY_MS = 20000;
const PONG_WITHIN_MS = 8000;

// A control: button #btn-KEY, its reason #why-KEY, its answer #result-KEY.
const CONTROLS = [
  { key: 'ring', command: 'trigger_doorbell', role: 'control', params: () => ({}),
    done: (r) => (r && Number.isSafeInteger(r.id) ? `Rang: event #${r.id}` : 'Rang.') },
  { key: 'restart', command: 'restart_pipeline', role: 'admin', params: () => ({}),
    done: (r) => `Camera restarting${r && r.camera && r.camera.state ? ` (now ${r.camera.state})` : ''}.` },
  { key: 'quality', command: 'set_quality', role: 'control', params: () => ({ quality: $('default-quality').value }),
    done: (r, p) => `Default quality is now ${(r && r.quality) || p.quality}.` },
];

let role = 'viewer';
let socket = null;
let live = false;
let attempt = 0;
let sequence = 0;
let pingTimer = null;
let pongTimer = null;
let indicator = null;
const pending = new Map(); // request_id → {resolve, reject, timer}
const busy = new Set();

export function startControl(options) {
  role = options.role;
  indicator = options.indicator;
  for (const control of CONTROLS) $(`btn-${control.key}`).addEventListener('click', () => run(control));
  render();
  connect();
}

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  socket = new WebSocket(`${scheme}//${location.host}/ws?client_id=${clientId}`);
  const mine = socket;
  mine.addEventListener('message', (m) => { if (mine === socket) receive(m.data); });
  mine.addEventListener('close', () => { if (mine === socket) lost(); });
}

function lost() {
  live = false;
  clearInterval(pingTimer);
  clearTimeout(pongTimer);
  for (const [id, call] of pending) {
    clearTimeout(call.timer);
    call.reject(new Error('the connection dropped before an answer came'));
    pending.delete(id);
  }
  indicator.set('ws', 'reconnecting');
  render();
  setTimeout(connect, backoff(attempt++));
}

function receive(text) {
  let message;
  try { message = JSON.parse(text); } catch { return; }
  if (!message || typeof message !== 'object') return;
  switch (message.type) {
    case 'connected':
      live = true;
      attempt = 0;
      indicator.set('ws', 'live');
      render();
      clearInterval(pingTimer);
      pingTimer = setInterval(ping, PING_EVERY_MS);
      break;
    case 'pong':
      clearTimeout(pongTimer);
      break;
    case 'command_result':
      settle(message.request_id, (call) => {
        if (message.success) call.resolve(message.result);
        else call.reject(new Error(message.error || 'the command failed'));
      });
      break;
    case 'error':
      settle(message.request_id, (call) => call.reject(new Error(message.message || message.code || 'refused')));
      break;
    default:
      break; // live_event etc.: this page takes events from SSE
  }
}

function settle(requestId, action) {
  const call = pending.get(requestId);
  if (!call) return;
  pending.delete(requestId);
  clearTimeout(call.timer);
  action(call);
}

function ping() {
  if (!live) return;
  socket.send(JSON.stringify({ type: 'ping' }));
  clearTimeout(pongTimer);
  // No pong: the connection is dead even if the socket has not noticed.
  pongTimer = setTimeout(() => socket.close(), PONG_WITHIN_MS);
}

/** Sends a system_command; resolves with its result or rejects with why it failed. */
export function command(name, params) {
  return new Promise((resolve, reject) => {
    if (!live) { reject(new Error('the control connection is down')); return; }
    const id = `${clientId}-${++sequence}`;
    const timer = setTimeout(() => {
      pending.delete(id);
      reject(new Error(`no answer within ${COMMAND_TIMEOUT_MS / 1000} s`));
    }, COMMAND_TIMEOUT_MS);
    pending.set(id, { resolve, reject, timer });
    socket.send(JSON.stringify({ type: 'system_command', command: name, params, request_id: id }));
  });
}

async function run(control) {
  const result = $(`result-${control.key}`);
  const params = control.params();
  busy.add(control.key);
  render();
  result.dataset.ok = '';
  result.textContent = 'Working…';
  try {
    const answer = await command(control.command, params);
    result.dataset.ok = 'true';
    result.textContent = `${control.done(answer, params)} (${new Date().toLocaleTimeString()})`;
  } catch (err) {
    result.dataset.ok = 'false';
    result.textContent = `Failed: ${err.message} (${new Date().toLocaleTimeString()})`;
  } finally {
    busy.delete(control.key);
    render();
  }
}

function render() {
  for (const control of CONTROLS) {
    let why = '';
    if (!roleAtLeast(role, control.role)) {
      why = `Needs the ${control.role} role; you are signed in as ${role}.`;
    } else if (!live) {
      why = 'Waiting for the control connection…';
    }
    const button = $(`btn-${control.key}`);
    button.disabled = Boolean(why) || busy.has(control.key);
    button.setAttribute('aria-busy', String(busy.has(control.key)));
    $(`why-${control.key}`).textContent = why;
  }
  $('default-quality').disabled = !roleAtLeast(role, 'control');
}
