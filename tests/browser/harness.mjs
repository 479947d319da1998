// Shared by the browser tests: start the real porchlight binary on a loopback port, drive
// Debian's Chromium through playwright-core (never a downloaded browser), and collect what a
// person would notice going wrong (console errors, uncaught exceptions, dialogs).

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, '..', '..');
export const BIN = process.env.PORCHLIGHT_BIN || join(REPO, 'target', 'debug', 'porchlight');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const OUTPUT = join(REPO, 'test-output', 'browser');
export const TOKENS = { viewer: 'viewer-token-0001', control: 'control-token-0002', admin: 'admin-token-0003' };
const START_TIMEOUT_MS = 20000;

/** A fresh temporary directory, removed by `cleanup()`. */
export function tempDir(tag) {
  const path = mkdtempSync(join(tmpdir(), `porchlight-browser-${tag}-`));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** A port that was free a moment ago (for the restart test, which must reuse one). */
export function freePort() {
  return new Promise((ok, fail) => {
    const probe = createServer();
    probe.unref();
    probe.on('error', fail);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => ok(port));
    });
  });
}

/**
 * Starts porchlight. `port` 0 lets it pick; `dataDir` defaults to a fresh temp dir.
 * Resolves once it logs `listening on http://127.0.0.1:PORT` (its readiness signal).
 */
export function startServer({ args = [], port = 0, dataDir } = {}) {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run cargo build first`);
  const ownDir = dataDir ? null : tempDir('data');
  const dir = dataDir || ownDir.path;
  const child = spawn(BIN, ['--listen', `127.0.0.1:${port}`, '--data-dir', dir, ...args],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      fail(new Error(`porchlight printed no "listening on" line in ${START_TIMEOUT_MS} ms:\n${log}`));
    }, START_TIMEOUT_MS);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      fail(new Error(`porchlight exited (${code ?? signal}) before listening:\n${log}`));
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      if (log.length < 1 << 20) log += chunk;
      const match = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(log);
      if (!match || child.listening) return;
      child.listening = true;
      clearTimeout(timer);
      const actualPort = Number(match[1]);
      const exited = new Promise((done) => child.once('exit', done));
      ok({
        port: actualPort,
        url: `http://127.0.0.1:${actualPort}`,
        dataDir: dir,
        log: () => log,
        /** SIGKILL, like a power cut; resolves when the process is gone. */
        async kill() {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
          await exited;
        },
        /**
         * Stops it with SIGTERM, as systemd would (so an instrumented build writes its
         * coverage profile); SIGKILL after 5 s. Removes its data dir if we made one.
         */
        async stop() {
          if (child.exitCode === null && child.signalCode === null) {
            child.kill('SIGTERM');
            const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
            await exited;
            clearTimeout(timer);
          }
          if (ownDir) ownDir.cleanup();
        },
      });
    });
  });
}

export function launchBrowser() {
  // launch() gives every browser a fresh temporary profile (user-data-dir) of its own.
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run',
      '--disable-dev-shm-usage'],
  });
}

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

/**
 * A page in a context of its own (own cookies, own connection pool). `problems` collects
 * console errors, uncaught exceptions and dialogs (an alert() would mean injected script ran).
 */
export async function openPage(browser, { viewport = DESKTOP, isMobile = false, permissions = [], colorScheme = 'light' } = {}) {
  const context = await browser.newContext({
    viewport,
    colorScheme,
    isMobile,
    hasTouch: isMobile,
    deviceScaleFactor: 1,
    permissions,
  });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()} (${msg.location().url})`);
  });
  page.on('pageerror', (err) => problems.push(`uncaught: ${err.message}`));
  page.on('dialog', (dialog) => {
    problems.push(`dialog ${dialog.type()}: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  return { context, page, problems };
}

export async function screenshot(page, name) {
  mkdirSync(OUTPUT, { recursive: true });
  const path = join(OUTPUT, `${name}.png`);
  await page.screenshot({ path, fullPage: false });
  return path;
}

/** A JSON request to the server, as a script would make it. */
export async function api(server, method, path, { body, token } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(server.url + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: response.status, json, text };
}

export async function postEvent(server, eventType, data = {}, token) {
  const r = await api(server, 'POST', '/api/events', { body: { event_type: eventType, data }, token });
  if (r.status !== 201) throw new Error(`POST /api/events: ${r.status} ${r.text}`);
  return r.json;
}

/** The list row of event `id`. */
export const eventRow = (page, id) => page.locator(`#event-list li[data-id="${id}"]`);

/** The state word an indicator shows ("live", "reconnecting", "offline"). */
export const indicator = (page, which) => page.locator(`#conn-${which} .conn-state`);

/** Waits until `selector`'s text matches `pattern` (the page's own rAF polling). */
export async function waitText(page, selector, pattern, timeout = 5000) {
  try {
    await page.waitForFunction(([sel, source, flags]) => {
      const node = document.querySelector(sel);
      return node && new RegExp(source, flags).test(node.textContent);
    }, [selector, pattern.source, pattern.flags], { timeout });
  } catch (err) {
    const now = await page.locator(selector).first().textContent().catch(() => null);
    throw new Error(`${selector} never matched ${pattern} in ${timeout} ms; it says ${JSON.stringify(now)}`, { cause: err });
  }
}

/** Waits until `selector` names a picture that has loaded (decoded, non-zero size). */
export async function waitPicture(page, selector, timeout = 5000) {
  await page.waitForFunction((sel) => {
    const img = document.querySelector(sel);
    return img && img.complete && img.naturalWidth > 0;
  }, selector, { timeout });
  return page.evaluate((sel) => {
    const img = document.querySelector(sel);
    return { width: img.naturalWidth, height: img.naturalHeight };
  }, selector);
}
