// The doorbell alert: a banner with the picture of who rang, a Web Audio chime (no sound
// file), and a notification when allowed and the person looks at something else.

import { $, fmtWhen, isLocalPath } from './dom.js';
import { openViewer } from './viewer.js';

const FRESH_S = 120; // an older press (a replay after an outage) is listed, not rung
const SOUND_KEY = 'porchlight.sound';
const TITLE = document.title;

let audio = null;
let soundOn = localStorage.getItem(SOUND_KEY) !== 'off';
let hideTimer = null;

export function startAlerts() {
  $('doorbell-dismiss').addEventListener('click', dismiss);
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && !$('doorbell-alert').hidden) dismiss(); });
  const soundButton = $('btn-sound');
  const renderSound = () => {
    soundButton.setAttribute('aria-pressed', String(soundOn));
    soundButton.textContent = `Doorbell sound: ${soundOn ? 'on' : 'off'}`;
  };
  soundButton.addEventListener('click', () => {
    soundOn = !soundOn;
    localStorage.setItem(SOUND_KEY, soundOn ? 'on' : 'off');
    renderSound();
    if (soundOn) chime();
  });
  renderSound();
  // Browsers only let a page make sound after the person has touched it once.
  const unlock = () => { audioContext(); };
  document.addEventListener('pointerdown', unlock, { once: true, capture: true });
  document.addEventListener('keydown', unlock, { once: true, capture: true });
  setUpNotifications();
}

/** Called for every live event. */
export function onEvent(event) {
  if (event.event_type !== 'doorbell_pressed') return;
  if (Date.now() / 1000 - event.timestamp > FRESH_S) return;
  const when = fmtWhen(new Date(event.timestamp * 1000));
  const picture = isLocalPath(event.snapshot_url) ? event.snapshot_url : null;
  const banner = $('doorbell-alert');
  const img = $('doorbell-picture');
  const pictureButton = $('doorbell-picture-btn');
  pictureButton.hidden = !picture;
  if (picture) {
    img.src = picture;
    pictureButton.onclick = () => openViewer(picture, `Doorbell · ${when} · event #${event.id}`, `porchlight-event-${event.id}.jpg`, event.clip_url);
  }
  $('doorbell-when').textContent = `Rang at ${when}`;
  banner.hidden = false;
  document.title = `🔔 Doorbell · ${TITLE}`;
  clearTimeout(hideTimer);
  hideTimer = setTimeout(dismiss, 5 * 60 * 1000);
  chime();
  notify(event, when, picture);
}

function dismiss() {
  $('doorbell-alert').hidden = true;
  document.title = TITLE;
  clearTimeout(hideTimer);
}

function audioContext() {
  const Context = window.AudioContext || window.webkitAudioContext;
  if (!Context) return null;
  if (!audio) audio = new Context();
  if (audio.state === 'suspended') audio.resume().catch(() => {});
  return audio;
}

/** Ding-dong: two bell-like tones (a fundamental and a quieter overtone, each decaying). */
function chime() {
  if (!soundOn) return;
  // Before the first touch a page may not play (the browser would only log a warning).
  const touched = !navigator.userActivation || navigator.userActivation.hasBeenActive;
  const ctx = audio || (touched ? audioContext() : null);
  if (!ctx) return;
  if (ctx.state === 'suspended') ctx.resume().catch(() => {});
  const start = ctx.currentTime + 0.02;
  bell(ctx, 659.25, start, 1.2); // E5
  bell(ctx, 523.25, start + 0.55, 1.6); // C5
}

function bell(ctx, frequency, start, length) {
  for (const [multiple, level] of [[1, 0.35], [2.76, 0.08], [5.4, 0.03]]) {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = 'sine';
    osc.frequency.value = frequency * multiple;
    gain.gain.setValueAtTime(0.0001, start);
    gain.gain.exponentialRampToValueAtTime(level, start + 0.01);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + length / multiple ** 0.5);
    osc.connect(gain).connect(ctx.destination);
    osc.start(start);
    osc.stop(start + length);
  }
}

function setUpNotifications() {
  const button = $('btn-notify');
  const note = $('notify-note');
  const render = () => {
    if (!('Notification' in window)) {
      button.hidden = true;
      note.textContent = 'This browser cannot show notifications.';
    } else if (!window.isSecureContext) {
      button.disabled = true;
      note.textContent = 'Browsers allow notifications only over HTTPS (or on this machine itself).';
    } else if (Notification.permission === 'granted') {
      button.disabled = true;
      button.textContent = 'Notifications on';
      note.textContent = '';
    } else if (Notification.permission === 'denied') {
      button.disabled = true;
      note.textContent = 'Notifications are blocked for this site in the browser settings.';
    } else {
      button.disabled = false;
    }
  };
  button.addEventListener('click', async () => {
    try { await Notification.requestPermission(); } catch { /* old callback-only API */ }
    render();
  });
  render();
}

function notify(event, when, picture) {
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  if (document.visibilityState === 'visible' && document.hasFocus()) return; // the banner is enough
  try {
    const shown = new Notification('Someone is at the door', {
      body: `Doorbell rang at ${when}`,
      icon: '/icon.svg',
      image: picture ? new URL(picture, location.href).href : undefined,
      tag: 'porchlight-doorbell',
      renotify: true,
    });
    shown.onclick = () => { window.focus(); shown.close(); };
  } catch { /* e.g. Android Chrome needs a service worker for this; the banner still shows */ }
}
