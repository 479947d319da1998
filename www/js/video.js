// Live video: an <img> on the MJPEG stream, a quality kept per browser, a snapshot button, an
// overlay when the camera or stream is down. A hidden page (a phone in a pocket) pulls none.

import { $, clientId, backoff, fmtWhen, pictureName } from './dom.js';
import { openViewer } from './viewer.js';

const QUALITIES = ['auto', 'low', 'medium', 'high', 'source'];
const STORE_KEY = 'porchlight.quality';

const img = $('live');
let quality = QUALITIES.includes(localStorage.getItem(STORE_KEY)) ? localStorage.getItem(STORE_KEY) : 'auto';
let cameraState = null;
let reachable = true;
let playing = false;
let wanted = false;
let attempt = 0;
let retryTimer = null;
let retryAt = 0;
let shown = '';

export const streamUrl = () => `/stream/video/${clientId}?quality=${quality}`;

export function startVideo() {
  const select = $('quality');
  select.value = quality;
  select.addEventListener('change', () => {
    quality = select.value;
    localStorage.setItem(STORE_KEY, quality);
    attempt = 0;
    connect();
  });
  $('snapshot-btn').addEventListener('click', snapshot);
  img.addEventListener('load', onFrame);
  img.addEventListener('error', onError);
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) stop();
    else connect();
  });
  setInterval(watch, 1000);
  if (!document.hidden) connect();
}

/** (Re)opens the stream now: after a server restart, or when the camera comes back. */
export function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  wanted = true;
  setPlaying(false);
  if (!cameraTrouble()) overlay('wait', 'Connecting to the camera…', '');
  // Removing the attribute first makes the browser fetch again even for the same URL.
  img.removeAttribute('src');
  img.src = streamUrl();
}

function setPlaying(on) {
  playing = on;
  img.parentElement.toggleAttribute('data-playing', on);
}

function stop() {
  wanted = false;
  setPlaying(false);
  clearTimeout(retryTimer);
  img.removeAttribute('src');
}

function onFrame() {
  if (!wanted || !img.naturalWidth) return;
  attempt = 0;
  if (!playing) {
    setPlaying(true);
    if (!cameraTrouble()) overlay(null);
  }
  const [w, h] = [img.naturalWidth, img.naturalHeight];
  // auto's preset: the smallest (320x240, doubled per step) that holds the picture.
  const preset = ['low', 'medium', 'high'].find((_, i) => w <= 320 << i && h <= 240 << i);
  const text = `${quality === 'auto' ? `auto: ${preset} · ` : ''}${w}×${h}`;
  if (text !== shown) $('video-info').textContent = shown = text;
}

/** Chromium fires `load` only at the first part, and no `error` when a playing stream is cut
 *  (the picture loses its size): so watch the size. */
function watch() {
  if (wanted && img.naturalWidth > 0 && img.src) onFrame(); // auto may change the size
  if (wanted && playing && img.naturalWidth === 0) onError();
  if (retryTimer && !cameraTrouble()) {
    const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
    $('video-overlay-detail').textContent = `Trying again in ${seconds} s.`;
  }
}

function onError() {
  if (!wanted || !img.getAttribute('src')) return;
  setPlaying(false);
  const delay = backoff(attempt++, 2000, 30000);
  retryAt = Date.now() + delay;
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, delay);
  if (!cameraTrouble()) overlay('wait', 'No live video', `Trying again in ${Math.ceil(delay / 1000)} s.`);
  $('video-info').textContent = shown = '';
}

const cameraTrouble = () => cameraState === 'offline' || cameraState === 'stalled';

/** From the event stream's indicator: is the server there at all? */
export function setServerReachable(ok) {
  if (ok === reachable) return;
  reachable = ok;
  if (!wanted) return;
  if (ok) connect();
  else overlay('wait', 'Connection lost', 'Reconnecting… the picture may be old.');
}

/** From the status stream, or a camera_offline / camera_online event. */
export function setCameraState(state) {
  if (state === cameraState) return;
  cameraState = state;
  if (state === 'offline') {
    overlay('offline', 'Camera offline', 'porchlight keeps trying to reopen it; events still arrive.');
  } else if (state === 'stalled') {
    overlay('offline', 'Camera stalled', 'The camera has sent no new picture for a while.');
  } else if (playing) {
    overlay(null);
  } else if (wanted && state === 'streaming') {
    attempt = 0;
    connect(); // no need to wait out the backoff: the camera is back
  } else if (state === 'starting') {
    overlay('wait', 'Camera starting…', '');
  }
}

function overlay(kind, title, detail) {
  const box = $('video-overlay');
  box.hidden = !kind;
  if (!kind) return;
  box.dataset.kind = kind;
  $('video-overlay-title').textContent = title;
  $('video-overlay-detail').textContent = detail;
}

async function snapshot() {
  const button = $('snapshot-btn');
  const info = $('video-info');
  button.disabled = true;
  try {
    const response = await fetch(`/api/snapshot.jpg?quality=${quality === 'auto' ? 'high' : quality}`, { cache: 'no-store' });
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try { message = (await response.json()).message || message; } catch { /* not JSON */ }
      info.textContent = `No snapshot: ${message}`;
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const now = new Date();
    openViewer(url, `Snapshot · ${fmtWhen(now)}`, pictureName('porchlight-snapshot', now));
  } catch (err) {
    info.textContent = `No snapshot: ${err.message}`;
  } finally {
    button.disabled = false;
  }
}
