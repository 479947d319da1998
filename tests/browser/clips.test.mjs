// Event clips in the dashboard (issue 17): an event with a clip plays it in the enlarged view,
// over its snapshot (the poster), with a link that saves the clip file — in Chromium and in
// Firefox. "Plays" is checked on what the browser paints (screenshots of the <img>): the
// picture changes while the clip runs (the synthetic camera's bars move, its frame number
// counts).

import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, launchBrowser, openPage, api, tempDir, screenshot, waitPicture } from './harness.mjs';
import { launchFirefox, openFirefoxPage, waitPictureFx } from './firefox.mjs';

const PRE_S = 1;
const POST_S = 5;
let server;
let config;
let clipEvent;

/** The value of one /metrics series. */
async function metric(name) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : null;
}

before(async () => {
  config = tempDir('clips-config');
  const path = join(config.path, 'clips.toml');
  writeFileSync(path, `clip_pre_s = ${PRE_S}.0\nclip_post_s = ${POST_S}.0\n`);
  server = await startServer({ args: ['--config', path] });
  // A full pre-roll first, then a press; the recording is finished before the browsers look.
  for (let i = 0; (await metric('porchlight_clip_preroll_seconds')) < PRE_S + 0.5; i++) {
    assert.ok(i < 200, 'the pre-roll never filled');
    await new Promise((done) => setTimeout(done, 50));
  }
  const rang = await api(server, 'POST', '/api/trigger-doorbell');
  assert.equal(rang.status, 200, rang.text);
  clipEvent = rang.json;
  assert.equal(clipEvent.clip_url, `/api/events/${clipEvent.id}/clip.mjpeg`);
  for (let i = 0; (await metric('porchlight_clips_recorded_total')) < 1; i++) {
    assert.ok(i < 400, 'the clip was never stored');
    await new Promise((done) => setTimeout(done, 50));
  }
});

after(async () => {
  await server?.stop();
  config?.cleanup();
});

/** Screenshots the viewer's picture for `ms`; returns how many different pictures it showed. */
async function distinctPictures(shoot, ms) {
  const seen = new Set();
  const until = Date.now() + ms;
  while (Date.now() < until) {
    seen.add(createHash('sha1').update(await shoot()).digest('hex'));
    await new Promise((done) => setTimeout(done, 100));
  }
  return seen.size;
}

/** What the enlarged view shows: its picture's source, poster, and the save link. */
function viewerState() {
  const img = document.getElementById('viewer-img');
  const save = document.getElementById('viewer-save');
  return {
    open: document.getElementById('viewer').open,
    src: img.getAttribute('src'),
    poster: img.style.backgroundImage,
    href: save.getAttribute('href'),
    download: save.getAttribute('download'),
    label: save.textContent,
  };
}

/** In the page: what the save link gives (status, type, bytes). */
async function fetchSave() {
  const response = await fetch(document.getElementById('viewer-save').href);
  const body = await response.arrayBuffer();
  return { status: response.status, type: response.headers.get('content-type'), bytes: body.byteLength };
}

function checkViewer(state) {
  assert.equal(state.open, true);
  assert.equal(state.src, clipEvent.clip_url, 'the enlarged view plays the clip');
  assert.ok(state.poster.includes(clipEvent.snapshot_url), `the snapshot is the poster: ${state.poster}`);
  assert.equal(state.href, `${clipEvent.clip_url}?download=1`);
  assert.equal(state.download, `porchlight-event-${clipEvent.id}.mkv`);
  assert.equal(state.label, 'Save clip');
}

const thumb = (id) => `#event-list li[data-id="${id}"] .thumb`;

it('Chromium: an event with a clip plays it in the enlarged view, with a link to save it', async () => {
  const browser = await launchBrowser();
  try {
    const { page, problems } = await openPage(browser);
    await page.goto(`${server.url}/`);
    await waitPicture(page, `${thumb(clipEvent.id)} img`);
    await page.click(thumb(clipEvent.id));
    checkViewer(await page.evaluate(viewerState));
    await waitPicture(page, '#viewer-img');
    // The clip is PRE_S + POST_S long: over two seconds of it, the picture keeps changing.
    const pictures = await distinctPictures(() => page.locator('#viewer-img').screenshot(), 3000);
    assert.ok(pictures >= 3, `the clip showed ${pictures} different pictures in 3 s`);
    await screenshot(page, 'clip-playing');
    const saved = await page.evaluate(fetchSave);
    assert.deepEqual([saved.status, saved.type], [200, 'video/x-matroska']);
    assert.ok(saved.bytes > 10000, `${saved.bytes} bytes`);
    // A picture without a clip still opens as a picture.
    await page.keyboard.press('Escape');
    const live = await api(server, 'POST', '/api/events', { body: { event_type: 'package_delivered' } });
    assert.equal(live.json.clip_url, null);
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
});

it('Firefox: an event with a clip plays it in the enlarged view, with a link to save it', async () => {
  const browser = await launchFirefox();
  try {
    const { page, problems } = await openFirefoxPage(browser);
    await page.goto(`${server.url}/`);
    await waitPictureFx(page, `${thumb(clipEvent.id)} img`);
    await page.click(thumb(clipEvent.id));
    checkViewer(await page.evaluate(viewerState));
    await waitPictureFx(page, '#viewer-img');
    const img = await page.$('#viewer-img');
    const pictures = await distinctPictures(() => img.screenshot(), 3000);
    assert.ok(pictures >= 3, `the clip showed ${pictures} different pictures in 3 s`);
    const saved = await page.evaluate(fetchSave);
    assert.deepEqual([saved.status, saved.type], [200, 'video/x-matroska']);
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
});
