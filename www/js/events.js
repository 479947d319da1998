// The event list: the first page from /api/events, then live events over SSE (newest first),
// earlier ones with "load more", and a type filter.
// EventSource hands a named event only to a listener for that name, and producers invent
// types: an unknown type leaves a hole in the ids (or a larger status `last_id`), which we
// fetch from /api/events, then listen to that type too.

import { $, el, fmtWhen, announce, isLocalPath, clientId, backoff } from './dom.js';
import { getJSON } from './api.js';
import { keepStreaming } from './stream.js';
import { openViewer } from './viewer.js';

const BUILT_IN = ['doorbell_pressed', 'motion_detected', 'camera_offline', 'camera_online', 'system_alert'];
const PAGE = 30;
const MAX_SHOWN = 300; // rows kept in the page; older ones come back through "load more"
const MAX_SEEN = 5000; // ids remembered to drop duplicates (replays, catch-up races)
const DATA_PREVIEW = 600; // characters of an event's data shown in the list

const list = $('event-list');
const rows = new Map(); // id → <li>
const seen = new Set();
const knownTypes = new Set(BUILT_IN);
const recentLive = []; // the last few live events, re-shown after a filter reload
let maxId = 0;
let serverLastId = 0;
let filter = '';
let listenTo = () => {};
let onLive = () => {};
let gapFrom = null;
let catchUpTimer = null;
let moreAvailable = false;

export const label = (type) => type.replace(/_/g, ' ');

// (A timestamp Date cannot show would make rendering throw.)
const valid = (e) => e && typeof e === 'object' && Number.isSafeInteger(e.id) &&
  typeof e.event_type === 'string' && Number.isFinite(e.timestamp) && Math.abs(e.timestamp) < 1e11;

/** Loads the first page, then follows the live stream. `onEvent` sees every live event. */
export async function startEvents({ indicator, onEvent }) {
  onLive = onEvent;
  $('type-filter').addEventListener('change', (e) => setFilter(e.target.value));
  $('load-more').addEventListener('click', loadMore);
  renderTypeOptions();
  for (let attempt = 0; ; attempt++) {
    try {
      await reload();
      break;
    } catch (err) {
      if (err.status === 401) return;
      note(`Could not load events (${err.message}); retrying…`);
      await new Promise((r) => setTimeout(r, backoff(attempt, 2000)));
    }
  }
  keepStreaming({ url: streamUrl, setup, indicator, part: 'events' });
}

/** The status stream's `events.last_id`: a larger one means we missed an unknown type. */
export function noteServerLastId(lastId) {
  if (!Number.isSafeInteger(lastId)) return;
  serverLastId = lastId;
  if (lastId > maxId) scheduleCatchUp();
}

function streamUrl() {
  // Replay from the first page's newest (0 on an empty store): nothing stored in between is lost.
  return `/stream/events?${new URLSearchParams({ client_id: clientId, last_event_id: String(maxId) })}`;
}

function setup(source) {
  const listening = new Set();
  listenTo = (type) => {
    if (listening.has(type)) return;
    listening.add(type);
    source.addEventListener(type, onMessage);
  };
  knownTypes.forEach(listenTo);
  source.addEventListener('gap', (message) => {
    try {
      const gap = JSON.parse(message.data);
      note(`Events #${gap.from + 1}–#${gap.to - 1} were removed by retention before this page saw them.`);
    } catch { /* ignore a malformed notice */ }
  });
}

function onMessage(message) {
  let event;
  try { event = JSON.parse(message.data); } catch { return; }
  receive(event, true);
}

function remember(id) {
  seen.add(id);
  if (seen.size > MAX_SEEN) seen.delete(seen.values().next().value);
}

function receive(event, live) {
  if (!valid(event) || seen.has(event.id)) return;
  remember(event.id);
  if (live && event.id > maxId + 1 && maxId > 0) {
    gapFrom = gapFrom == null ? maxId : Math.min(gapFrom, maxId);
    scheduleCatchUp();
  }
  maxId = Math.max(maxId, event.id);
  learnType(event.event_type);
  if (live) {
    recentLive.push(event);
    if (recentLive.length > 20) recentLive.shift();
    onLive(event);
  }
  if (!filter || filter === event.event_type) insert(event, live);
}

function scheduleCatchUp() {
  if (catchUpTimer) return;
  // Give the stream a moment: usually the event is simply still on its way.
  catchUpTimer = setTimeout(catchUp, 1000);
}

async function catchUp() {
  catchUpTimer = null;
  const from = gapFrom != null ? gapFrom : (serverLastId > maxId ? maxId : null);
  gapFrom = null;
  if (from == null) return;
  try {
    const { events } = await getJSON(`/api/events?after=${from}&limit=500`);
    for (const event of events.slice().reverse()) receive(event, true);
  } catch { /* the next status tick tries again */ }
}

function learnType(type) {
  if (knownTypes.has(type)) return;
  knownTypes.add(type);
  listenTo(type);
  renderTypeOptions();
}

function renderTypeOptions() {
  const select = $('type-filter');
  const options = [el('option', { value: '', text: 'All types' })];
  for (const type of [...knownTypes].sort()) options.push(el('option', { value: type, text: label(type) }));
  select.replaceChildren(...options);
  select.value = filter;
}

async function setFilter(type) {
  filter = type;
  try {
    await reload();
  } catch (err) {
    note(`Could not load events (${err.message}).`);
  }
}

async function fetchPage(before) {
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (before) query.set('before', String(before));
  if (filter) query.set('type', filter);
  const { events } = await getJSON(`/api/events?${query}`);
  return events.filter(valid);
}

async function reload() {
  const wanted = filter;
  const events = await fetchPage();
  if (wanted !== filter) return; // another filter was chosen meanwhile
  list.replaceChildren();
  rows.clear();
  for (const event of events) {
    remember(event.id);
    maxId = Math.max(maxId, event.id);
    learnType(event.event_type);
    append(event);
  }
  // Live events that came while the page was loading.
  for (const event of recentLive) if (!filter || filter === event.event_type) insert(event, false);
  setMore(events.length === PAGE);
  note('');
}

async function loadMore() {
  const last = list.lastElementChild;
  if (!last) return;
  const button = $('load-more');
  button.disabled = true;
  try {
    const events = await fetchPage(Number(last.dataset.id));
    for (const event of events) if (!rows.has(event.id)) append(event);
    setMore(events.length === PAGE);
  } catch (err) {
    $('more-note').textContent = `Could not load more (${err.message}).`;
  } finally {
    button.disabled = false;
  }
}

function setMore(available) {
  moreAvailable = available;
  $('load-more').hidden = !available;
  const empty = list.children.length === 0;
  $('more-note').textContent = available ? '' : empty
    ? (filter ? `No ${label(filter)} events yet.` : 'No events yet. Ring the doorbell to see one here.')
    : 'That is all.';
}

function append(event) {
  const row = render(event);
  list.append(row);
  rows.set(event.id, row);
}

/** Puts a row where its id belongs (newest first): nearly always at the top. */
function insert(event, fresh) {
  if (rows.has(event.id)) return;
  const row = render(event);
  let before = null;
  for (const other of list.children) {
    if (Number(other.dataset.id) < event.id) { before = other; break; }
  }
  if (!before && moreAvailable && list.children.length) return; // older than the page: "load more" has it
  list.insertBefore(row, before);
  rows.set(event.id, row);
  if (fresh) {
    row.classList.add('fresh');
    announce(`New event: ${label(event.event_type)}`);
  }
  while (list.children.length > MAX_SHOWN) {
    const oldest = list.lastElementChild;
    rows.delete(Number(oldest.dataset.id));
    oldest.remove();
    moreAvailable = true;
  }
  setMore(moreAvailable);
}

function render(event) {
  const when = new Date(event.timestamp * 1000);
  const source = typeof event.source === 'string' ? event.source : 'unknown source';
  return el('li', { class: 'event', 'data-id': event.id, 'data-type': event.event_type },
    thumbnail(event, when),
    el('div', { class: 'ev-body' },
      el('p', { class: 'ev-head' },
        el('span', { class: 'ev-type', text: label(event.event_type) }),
        el('time', { datetime: when.toISOString(), text: fmtWhen(when) })),
      el('p', { class: 'ev-meta', text: `#${event.id} · from ${source}` }),
      dataBlock(event.data)));
}

/** The event's data as text: `key: value` lines for a flat object, else JSON. */
function dataBlock(data) {
  if (data == null || (typeof data === 'object' && Object.keys(data).length === 0)) return null;
  let text;
  if (typeof data === 'object' && !Array.isArray(data)) {
    text = Object.entries(data)
      .map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`).join('\n');
  } else {
    text = JSON.stringify(data);
  }
  if (text.length > DATA_PREVIEW) text = `${text.slice(0, DATA_PREVIEW)}…`;
  return el('pre', { class: 'ev-data', text });
}

function thumbnail(event, when) {
  if (!isLocalPath(event.snapshot_url)) return el('div', { class: 'no-thumb', text: 'No picture' });
  const caption = `${label(event.event_type)} · ${fmtWhen(when)} · event #${event.id}`;
  const img = el('img', { src: event.snapshot_url, alt: `Picture of event #${event.id}`, decoding: 'async' });
  const button = el('button', {
    type: 'button',
    class: 'thumb',
    'aria-label': `Enlarge the picture of event #${event.id}`,
    onclick: () => openViewer(event.snapshot_url, caption, `porchlight-event-${event.id}.jpg`, event.clip_url, event.data?.box),
  }, img);
  img.addEventListener('error', () => button.replaceWith(el('div', { class: 'no-thumb', text: 'Picture not available' })));
  return button;
}

function note(text) {
  $('events-note').textContent = text;
}
