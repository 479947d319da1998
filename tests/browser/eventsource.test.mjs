// The npm `eventsource` package (EventSource for Node, not a browser) against the real binary:
// it gets a posted event at once (the delivery latency is printed), and when the server is
// killed and comes back on the same port it reconnects by itself with Last-Event-ID and gets the
// event it missed, once.

import { it } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
import { startServer, postEvent, freePort, tempDir } from './harness.mjs';

const TARGET_MS = 100;
const SAMPLES = 5;

/** Resolves with the next message of `type` that `source` dispatches. */
function next(source, type, timeoutMs = 15000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      source.removeEventListener(type, on);
      reject(new Error(`no ${type} event within ${timeoutMs} ms`));
    }, timeoutMs);
    function on(message) {
      clearTimeout(timer);
      source.removeEventListener(type, on);
      resolve({ message, at: Date.now() });
    }
    source.addEventListener(type, on);
  });
}

it('eventsource gets events at once and resumes with Last-Event-ID across a restart', async (t) => {
  const data = tempDir('eventsource');
  const port = await freePort();
  let server = await startServer({ port, dataDir: data.path });
  // Every request the library makes, with its headers, to see what it resends on reconnect.
  const requests = [];
  const source = new EventSource(`${server.url}/stream/events`, {
    fetch: (url, init) => {
      requests.push({ ...init.headers });
      return fetch(url, init);
    },
  });
  try {
    const connected = await next(source, 'connected');
    assert.ok(JSON.parse(connected.message.data).client_id);

    const latencies = [];
    let last;
    for (let n = 0; n < SAMPLES; n++) {
      const arriving = next(source, 'doorbell_pressed');
      const posted = await postEvent(server, 'doorbell_pressed', { n });
      const { message, at } = await arriving;
      assert.equal(message.lastEventId, String(posted.id));
      assert.deepEqual(JSON.parse(message.data), posted);
      latencies.push(at - posted.timestamp * 1000);
      last = posted;
    }
    latencies.sort((a, b) => a - b);
    const median = latencies[Math.floor(latencies.length / 2)];

    // A power cut: the library notices, waits `retry` (3 s) and reconnects by itself.
    await server.kill();
    server = await startServer({ port, dataDir: data.path });
    const reopened = next(source, 'connected', 20000);
    const missed = await postEvent(server, 'motion_detected', { note: 'made while it was away' });
    const replayed = next(source, 'motion_detected', 20000);
    await reopened;
    const { message } = await replayed;
    assert.equal(message.lastEventId, String(missed.id));
    const resent = requests.at(-1)['Last-Event-ID'] ?? requests.at(-1)['last-event-id'];
    assert.equal(resent, String(last.id), `reconnect headers ${JSON.stringify(requests.at(-1))}`);

    t.diagnostic(`[interop] eventsource (npm): delivery latency median ${median.toFixed(1)} ms, `
      + `max ${latencies.at(-1).toFixed(1)} ms over ${SAMPLES} events; after a restart it `
      + `reconnected with Last-Event-ID ${resent} and got event ${missed.id}`);
    assert.ok(median <= TARGET_MS, `median delivery ${median} ms`);
  } finally {
    source.close();
    await server.stop();
    data.cleanup();
  }
});
