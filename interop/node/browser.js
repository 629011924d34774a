'use strict';
// Headless Chromium through playwright-core, as both browser suites
// (chromium_suite.js, admin_page.js) start it: Debian's chromium, the
// flags the project runs it with, a fresh user data directory per run.

const fs = require('fs');

const CHROMIUM = process.env.INTEROP_CHROMIUM || '/usr/bin/chromium';
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// loadChromium returns playwright's chromium, or why it cannot be used.
function loadChromium() {
  let chromium = null;
  try {
    ({ chromium } = require('playwright-core'));
  } catch (e) {
    return { chromium, missing: 'playwright-core missing (npm ci --prefix interop/node)' };
  }
  if (!fs.existsSync(CHROMIUM)) return { chromium, missing: `${CHROMIUM} not found (apt-get install chromium)` };
  return { chromium, missing: null };
}

// launch starts Chromium with userDir as its profile; launchError says why
// it could not.
async function launch(chromium, userDir, viewport) {
  try {
    const ctx = await chromium.launchPersistentContext(userDir, {
      executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 30000, viewport,
    });
    return { ctx, launchError: null };
  } catch (e) {
    return { ctx: null, launchError: `launching ${CHROMIUM} failed: ${e && e.message ? e.message.split('\n')[0] : e}` };
  }
}

module.exports = { CHROMIUM, loadChromium, launch };
