// A browser that cannot run the dashboard gets a clear message instead of a blank page with a
// stray "Save picture" link and "Close" button (issue 13). Simulated in Chromium two ways: the
// module never runs (what a browser without ES modules does), and the module fails to parse
// (what a browser with modules but older syntax does). A working browser never sees the message.

import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openPage, screenshot } from './harness.mjs';

let browser;
let server;

before(async () => {
  browser = await launchBrowser();
  server = await startServer();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function visibleText(page) {
  return page.evaluate(() => document.body.innerText);
}

for (const [name, handler] of [
  ['its modules never run', (route) => route.abort('blockedbyclient')],
  ['its modules fail to parse', (route) => route.fulfill({
    status: 200, contentType: 'text/javascript', body: 'export const tooNew = ;',
  })],
]) {
  it(`a browser where ${name} is told why instead of shown a broken page`, async () => {
    const { page, context } = await openPage(browser);
    await page.route('**/js/main.js', handler);
    await page.goto(`${server.url}/`);
    await page.locator('#old-browser').waitFor({ state: 'visible', timeout: 5000 });
    const text = await visibleText(page);
    assert.match(text, /too old for the porchlight dashboard/);
    assert.match(text, /\/stream\/video/);
    for (const stray of ['Save picture', 'Close', 'Sign in to porchlight', 'Ring test doorbell']) {
      assert.ok(!text.includes(stray), `"${stray}" is shown: ${text}`);
    }
    if (name.includes('never run')) await screenshot(page, 'old-browser-message');
    await context.close();
  });
}

it('a current browser never sees the message', async () => {
  const { page, context, problems } = await openPage(browser);
  await page.goto(`${server.url}/`);
  await page.locator('#dashboard').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#old-browser').isVisible(), false);
  assert.equal(await page.getAttribute('html', 'data-app'), 'running');
  assert.deepEqual(problems, []);
  await context.close();
});
