// Firefox for the browser tests: Debian's firefox-esr driven over WebDriver BiDi by
// puppeteer-core (which never downloads a browser), in a fresh profile and HOME of its own.
// Also a small HTTP proxy that notes when each MJPEG frame's last byte reaches the browser, for
// the paint-delay measurement.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import puppeteer from 'puppeteer-core';

export const FIREFOX = process.env.FIREFOX || '/usr/bin/firefox-esr';

/** A headless Firefox; `close()` also removes its profile. */
export async function launchFirefox() {
  const profile = mkdtempSync(join(tmpdir(), 'porchlight-firefox-'));
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: true,
    userDataDir: profile,
    env: { ...process.env, HOME: profile },
    protocolTimeout: 60000,
    timeout: 60000,
  });
  const close = browser.close.bind(browser);
  browser.close = async () => {
    try { await close(); } finally { rmSync(profile, { recursive: true, force: true }); }
  };
  return browser;
}

/** A page that collects uncaught exceptions and console errors, like the Chromium harness. */
export async function openFirefoxPage(browser, { width = 1280, height = 800 } = {}) {
  const page = await browser.newPage();
  await page.setViewport({ width, height });
  const problems = [];
  page.on('pageerror', (err) => problems.push(`uncaught: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
  });
  page.on('dialog', (dialog) => {
    problems.push(`dialog ${dialog.type()}: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  return { page, problems };
}

/** Waits until `selector` names a loaded picture (decoded, non-zero size). */
export async function waitPictureFx(page, selector, timeout = 15000) {
  await page.waitForFunction((sel) => {
    const img = document.querySelector(sel);
    return img && img.complete && img.naturalWidth > 0;
  }, { timeout }, selector);
}

/** Waits until `selector`'s text matches `pattern`. */
export async function waitTextFx(page, selector, pattern, timeout = 15000) {
  try {
    await page.waitForFunction((sel, source, flags) => {
      const node = document.querySelector(sel);
      return node && new RegExp(source, flags).test(node.textContent);
    }, { timeout }, selector, pattern.source, pattern.flags);
  } catch (err) {
    const now = await page.$eval(selector, (n) => n.textContent).catch(() => null);
    throw new Error(`${selector} never matched ${pattern}; it says ${JSON.stringify(now)}`, { cause: err });
  }
}

/**
 * A proxy in front of porchlight: forwards every request as is and, in each MJPEG response,
 * notes when the last byte of each part's JPEG was handed to the browser's socket:
 * `arrivals` gets `{ url, stream, at }` (Date.now()) per part, in order.
 */
export function mjpegTapProxy(upstreamPort) {
  const arrivals = [];
  let streams = 0;
  const server = http.createServer((req, res) => {
    const upstream = http.request({
      host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url,
      headers: { ...req.headers, host: `127.0.0.1:${upstreamPort}` },
    }, (up) => {
      res.writeHead(up.statusCode, up.headers);
      res.flushHeaders();
      const multipart = /multipart\/x-mixed-replace/.test(up.headers['content-type'] || '');
      const stream = ++streams;
      const parser = multipart
        ? partParser(() => arrivals.push({ url: req.url, stream, at: Date.now() }))
        : null;
      up.on('data', (chunk) => {
        res.write(chunk);
        if (parser) parser(chunk);
      });
      up.on('end', () => res.end());
      up.on('error', () => res.destroy());
    });
    upstream.on('error', () => res.destroy());
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok({
    port: server.address().port,
    arrivals,
    close: () => new Promise((done) => { server.closeAllConnections(); server.close(done); }),
  })));
}

/** Calls `onJpeg()` as each part's JPEG completes in a multipart byte stream. */
function partParser(onJpeg) {
  let head = Buffer.alloc(0);
  let need = 0;
  return (chunk) => {
    let data = chunk;
    while (data.length) {
      if (need > 0) {
        const take = Math.min(need, data.length);
        need -= take;
        data = data.subarray(take);
        if (need === 0) onJpeg();
        continue;
      }
      head = Buffer.concat([head, data]);
      data = Buffer.alloc(0);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) break;
      const text = head.subarray(0, end).toString('latin1');
      const match = /Content-Length:\s*(\d+)/i.exec(text);
      data = head.subarray(end + 4);
      head = Buffer.alloc(0);
      if (match) need = Number(match[1]);
    }
  };
}
