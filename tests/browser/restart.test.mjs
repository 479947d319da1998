// Killing the server under an open dashboard: the page says "reconnecting", then recovers on
// its own and lists what happened while its connection was down (EventSource resends
// Last-Event-ID; the server replays from its store).

import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, openPage, screenshot, postEvent, eventRow, waitText, waitPicture,
  freePort, tempDir,
} from './harness.mjs';

let browser;
let data;

before(async () => {
  browser = await launchBrowser();
  data = tempDir('restart');
});

after(async () => {
  await browser?.close();
  data?.cleanup();
});

it('shows "reconnecting" when the server dies, then recovers and lists what it missed', async (t) => {
  // The same port and data dir on restart, as a device rebooting would have.
  const port = await freePort();
  let server = await startServer({ port, dataDir: data.path });
  try {
    const before = await postEvent(server, 'motion_detected', { zone: 'gate' });
    const { page, problems, context } = await openPage(browser);
    await page.goto(`${server.url}/`);
    await eventRow(page, before.id).waitFor();
    await waitText(page, '#conn-sse .conn-state', /^live$/);
    await waitText(page, '#conn-ws .conn-state', /^live$/);
    await waitPicture(page, '#live');
    // One event over the live stream, so EventSource has a Last-Event-ID to resend.
    const seen = await postEvent(server, 'motion_detected', { zone: 'path' });
    await eventRow(page, seen.id).waitFor();

    // Hold the page's own requests back while the server is away, so the event made meanwhile
    // can only reach it through the replay (not by luck of reconnect timing).
    await page.route('**/*', (route) => route.abort('connectionrefused'));
    await server.kill();
    await waitText(page, '#conn-sse .conn-state', /^reconnecting$/);
    await waitText(page, '#conn-ws .conn-state', /^reconnecting$/);
    await screenshot(page, 'desktop-reconnecting');

    server = await startServer({ port, dataDir: data.path });
    const missed = await postEvent(server, 'doorbell_pressed_elsewhere', { note: 'made while the page was cut off' });
    assert.ok(missed.id > before.id);
    const reconnects = [];
    page.on('request', async (request) => {
      if (!request.url().includes('/stream/events')) return;
      // allHeaders(): the header EventSource adds itself is not among the provisional ones.
      const headers = await request.allHeaders().catch(() => ({}));
      reconnects.push(headers['last-event-id'] ?? null);
    });
    await page.unroute('**/*');

    await eventRow(page, missed.id).waitFor({ timeout: 15000 });
    await waitText(page, '#conn-sse .conn-state', /^live$/, 15000);
    await waitText(page, '#conn-ws .conn-state', /^live$/, 15000);
    t.diagnostic(`events stream reopened with Last-Event-ID ${JSON.stringify(reconnects)}`);
    assert.ok(reconnects.includes(String(seen.id)),
      `the reconnect carried Last-Event-ID ${seen.id}: ${JSON.stringify(reconnects)}`);
    // The older events are still there, once each, and the video came back by itself.
    assert.equal(await eventRow(page, before.id).count(), 1);
    assert.equal(await eventRow(page, seen.id).count(), 1);
    await page.locator('#video-overlay').waitFor({ state: 'hidden', timeout: 15000 });
    await waitPicture(page, '#live');
    await context.close();
    // While the server was gone the browser logged refused connections; nothing else.
    const unexpected = problems.filter((p) => !/ERR_CONNECTION_REFUSED|ERR_FAILED|net::|WebSocket connection/.test(p));
    assert.deepEqual(unexpected, []);
  } finally {
    await server.stop();
  }
});

it('says "offline" while the device has no network, and catches up when it is back', async () => {
  const server = await startServer();
  try {
    const { page, context } = await openPage(browser);
    await page.goto(`${server.url}/`);
    await waitText(page, '#conn-sse .conn-state', /^live$/);
    await context.setOffline(true); // Wi-Fi gone
    await waitText(page, '#conn-sse .conn-state', /^offline$/);
    await waitText(page, '#conn-ws .conn-state', /^offline$/);
    const meanwhile = await postEvent(server, 'motion_detected', { zone: 'while offline' });
    await context.setOffline(false);
    await eventRow(page, meanwhile.id).waitFor({ timeout: 15000 });
    await waitText(page, '#conn-sse .conn-state', /^live$/, 15000);
    await waitText(page, '#conn-ws .conn-state', /^live$/, 15000);
    await context.close();
  } finally {
    await server.stop();
  }
});
