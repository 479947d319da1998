// The status panel, fed by /stream/system-status (a status object every couple of seconds).

import { $, fmtBytes, fmtDuration, num, clientId } from './dom.js';
import { keepStreaming } from './stream.js';

const CAMERA_STATES = {
  streaming: 'streaming',
  starting: 'starting…',
  stalled: 'stalled (no new frames)',
  offline: 'offline',
};

/** `onStatus(status)` sees every status object (camera state, last event id). */
export function startStatus({ indicator, onStatus }) {
  const stream = keepStreaming({
    url: () => `/stream/system-status?client_id=${clientId}-status`,
    indicator,
    part: 'status',
    setup(source) {
      source.addEventListener('system_status', (message) => {
        let status;
        try { status = JSON.parse(message.data); } catch { return; }
        if (!status || typeof status !== 'object') return;
        render(status);
        onStatus(status);
      });
    },
  });
  // A browser keeps ~6 connections per server: a hidden tab gives this one back.
  document.addEventListener('visibilitychange', () => (document.hidden ? stream.pause() : stream.resume()));
}

function set(id, text, level) {
  const dd = $(id);
  dd.textContent = text;
  if (level) dd.dataset.level = level;
  else delete dd.dataset.level;
}

function render(s) {
  const cam = s.camera || {};
  const size = cam.width && cam.height ? ` · ${cam.width}×${cam.height}` : '';
  const state = CAMERA_STATES[cam.state] || (cam.state ? String(cam.state) : 'unknown');
  set('st-camera', `${state}${size}`,
    cam.state === 'offline' ? 'bad' : cam.state === 'stalled' ? 'warn' : null);
  $('st-camera').title = typeof cam.source === 'string' ? cam.source : '';
  set('st-fps', cam.fps_target != null || cam.fps_measured != null
    ? `${num(cam.fps_measured)} of ${cam.fps_target ?? '—'} fps` +
      (typeof cam.frames_dropped === 'number' && cam.frames_dropped > 0 ? ` · ${cam.frames_dropped} dropped` : '')
    : '—');
  set('st-cpu', typeof s.cpu_percent === 'number' ? `${num(s.cpu_percent)} %` : '—',
    s.cpu_percent > 90 ? 'warn' : null);
  set('st-mem', s.rss_bytes != null || s.mem_available_bytes != null
    ? `${fmtBytes(s.rss_bytes)} used · ${fmtBytes(s.mem_available_bytes)} free` : '—');
  set('st-temp', typeof s.temperature_c === 'number' ? `${num(s.temperature_c)} °C` : 'not measured',
    s.temperature_c >= 80 ? 'bad' : s.temperature_c >= 70 ? 'warn' : null);
  set('st-load', Array.isArray(s.load_avg) ? s.load_avg.map((v) => num(v, 2)).join(' · ') : '—');
  set('st-uptime', fmtDuration(s.uptime_s));
  const c = s.clients || {};
  set('st-clients', `${c.sse ?? '—'} events · ${c.websocket ?? '—'} control · ${c.video ?? '—'} video`);
  const ev = s.events || {};
  set('st-events', `${ev.stored ?? '—'} stored · last #${ev.last_id ?? '—'}`);
  const bell = s.doorbell || {};
  set('st-doorbell', bell.source ? `${bell.source}${bell.pin != null ? ` · pin ${bell.pin}` : ''}` : '—');
  const when = typeof s.timestamp === 'number' ? new Date(s.timestamp * 1000) : new Date();
  $('st-updated').textContent = `porchlight ${s.version ?? ''} · updated ${when.toLocaleTimeString()}`;
}
