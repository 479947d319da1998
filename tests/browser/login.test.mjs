// Signing in: with tokens configured every data endpoint needs one, and the page asks for it.

import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, openPage, screenshot, postEvent, eventRow, waitText, TOKENS, PHONE,
} from './harness.mjs';

let server;
let browser;
let seeded;

before(async () => {
  server = await startServer({
    args: Object.entries(TOKENS).flatMap(([role, token]) => ['--token', `${role}:${token}`]),
  });
  browser = await launchBrowser();
  seeded = await postEvent(server, 'motion_detected', { zone: 'drive' }, TOKENS.admin);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Uncaught exceptions and dialogs only: the browser itself logs each 401 as a console error. */
const serious = (problems) => problems.filter((p) => !p.startsWith('console error: Failed to load resource'));

it('asks for a token, refuses a wrong one, and a viewer sees events but not controls', async () => {
  const { page, problems, context } = await openPage(browser, { viewport: PHONE, isMobile: true });
  const response = await page.goto(`${server.url}/`);
  assert.equal(response.status(), 401, 'the page itself still needs a token');
  await page.locator('#login').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#dashboard').isVisible(), false);
  assert.equal(await page.locator('#login-token').evaluate((el) => el === document.activeElement), true);
  await screenshot(page, 'phone-login');

  await page.fill('#login-token', 'not-the-token-at-all');
  await page.press('#login-token', 'Enter');
  await waitText(page, '#login-error', /not valid/);
  assert.equal(await page.locator('#dashboard').isVisible(), false);

  await page.fill('#login-token', TOKENS.viewer);
  await page.click('#login-submit');
  await page.locator('#dashboard').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#login').isVisible(), false);
  await waitText(page, '#role-badge', /^viewer$/);
  await eventRow(page, seeded.id).waitFor();
  await waitText(page, '#conn-sse .conn-state', /^live$/);
  // A viewer may watch but not act: the buttons are off and say why.
  assert.equal(await page.locator('#btn-ring').isDisabled(), true);
  await waitText(page, '#why-ring', /Needs the control role/);
  await waitText(page, '#why-restart', /Needs the admin role/);
  await waitText(page, '#why-quality', /Needs the control role/);
  const cookie = (await context.cookies()).find((c) => c.name === 'porchlight_token');
  assert.equal(cookie?.httpOnly, true, 'the token is kept out of reach of scripts');

  // Live events reach a signed-in page.
  const live = await postEvent(server, 'face_recognized', { name: 'Carol' }, TOKENS.admin);
  await eventRow(page, live.id).waitFor({ timeout: 5000 });

  // The cookie carries over: a reload goes straight to the dashboard.
  const again = await page.reload();
  assert.equal(again.status(), 200);
  await page.locator('#dashboard').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#login').isVisible(), false);

  // Another token, from the header link: the page starts over with the new role.
  await page.click('#switch-token');
  await page.fill('#login-token', TOKENS.admin);
  await Promise.all([page.waitForEvent('load'), page.click('#login-submit')]);
  await waitText(page, '#role-badge', /^admin$/);
  await waitText(page, '#conn-ws .conn-state', /^live$/);
  assert.equal(await page.locator('#btn-restart').isEnabled(), true);
  assert.equal(await page.locator('#why-restart').textContent(), '');
  await context.close();
  assert.deepEqual(serious(problems), []);
});

it('signs in from a ?token= link and takes the token out of the address bar', async () => {
  const { page, problems, context } = await openPage(browser);
  await page.goto(`${server.url}/?token=${TOKENS.control}`);
  await page.locator('#dashboard').waitFor({ state: 'visible' });
  await waitText(page, '#role-badge', /^control$/);
  assert.equal(new URL(page.url()).search, '');
  await waitText(page, '#why-restart', /Needs the admin role/);
  await context.close();
  assert.deepEqual(serious(problems), []);
});
