'use strict';
// Rules tests with headless Chromium as the client, driven by playwright-core.
//
// Usage: node interop/node/chromium_suite.js --bin /tmp/wschaos [--filter TEXT]
// Environment: INTEROP_CHROMIUM (default /usr/bin/chromium); CI=true makes a
// missing browser a failure instead of a skip.
//
// A page served from 127.0.0.1 opens `new WebSocket(proxyURL)` and records
// what the browser reports: open, messages, whether an error event fired,
// and the CloseEvent's code, reason and wasClean. One screenshot per case
// is saved under artifacts/chromium/ at the repository root.

const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const B = require('./browser');
const L = require('./lib');
const K = require('./rules_kit');

const { Fail, Skip, check, Runner } = L;

const LABEL = 'chromium';
const ROOT = path.resolve(__dirname, '..', '..');
const ARTIFACTS = path.join(ROOT, 'artifacts', 'chromium');
const CI = process.env.CI === 'true';

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>wschaos in Chromium</title>
<style>
  body { font: 15px/1.4 sans-serif; margin: 24px; }
  h1 { font-size: 20px; }
  pre { background: #f4f4f4; padding: 12px; }
  .ok { color: #06620a; } .bad { color: #a00; }
</style></head>
<body>
<h1 id="title">wschaos</h1>
<p>WebSocket URL: <code id="url"></code></p>
<pre id="log"></pre>
<p id="summary"></p>
<script>
  const q = new URLSearchParams(location.search);
  const url = q.get('ws');
  const r = { opened: false, error: false, messages: [], code: null, reason: null, wasClean: null, done: false, events: [] };
  window.result = r;
  const t0 = performance.now();
  const log = (s) => {
    r.events.push(s);
    document.getElementById('log').textContent += Math.round(performance.now() - t0) + 'ms  ' + s + '\\n';
  };
  document.getElementById('title').textContent = 'case: ' + q.get('case');
  document.getElementById('url').textContent = url;
  const ws = new WebSocket(url);
  ws.onopen = () => { r.opened = true; log('open'); ws.send('hello from chromium'); };
  ws.onmessage = (e) => { r.messages.push(String(e.data)); log('message ' + JSON.stringify(String(e.data))); };
  ws.onerror = () => { r.error = true; log('error event'); };
  ws.onclose = (e) => {
    r.code = e.code; r.reason = e.reason; r.wasClean = e.wasClean; r.done = true;
    log('close code=' + e.code + ' reason=' + JSON.stringify(e.reason) + ' wasClean=' + e.wasClean);
    const s = document.getElementById('summary');
    s.textContent = 'CloseEvent ' + e.code + ' ' + JSON.stringify(e.reason) + (r.error ? ' after an error event' : '');
    s.className = 'done';
  };
</script>
</body></html>
`;

function servePage() {
  return new Promise((resolve, reject) => {
    const server = http.createServer((req, res) => {
      if (new URL(req.url, 'http://x').pathname !== '/case.html') {
        res.writeHead(404, { 'Content-Length': 0 });
        res.end();
        return;
      }
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': Buffer.byteLength(PAGE), 'Cache-Control': 'no-store' });
      res.end(PAGE);
    });
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

const CASES = [
  {
    name: 'reset',
    rule: { name: 'reset', match: { path: '/reset' }, after: '300ms', action: 'reset' },
    want: { opened: true, messages: ['hello from chromium'], code: 1006, reason: '', wasClean: false },
  },
  {
    name: 'close-1012',
    rule: { name: 'restart', match: { path: '/restart' }, after: '300ms', action: 'close', code: 'service_restart', reason: 'service restart' },
    want: { opened: true, error: false, messages: ['hello from chromium'], code: 1012, reason: 'service restart', wasClean: true },
  },
  {
    name: 'close-3008',
    rule: { name: 'timeout', match: { path: '/timeout' }, after: '300ms', action: 'close', code: 'timeout', reason: 'idle timeout' },
    want: { opened: true, error: false, messages: ['hello from chromium'], code: 3008, reason: 'idle timeout', wasClean: true },
  },
  {
    name: 'reject',
    rule: { name: 'reject', match: { path: '/reject' }, on: 'connect', action: 'reject', status: 503, retry_after: 5, body: 'overloaded' },
    want: { opened: false, error: true, messages: [], code: 1006, reason: '', wasClean: false },
  },
];

async function main() {
  const argv = process.argv.slice(2);
  const arg = (name) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : undefined; };
  const bin = arg('--bin');
  const filter = arg('--filter') || '';
  const r = new Runner(LABEL, parseFloat(process.env.INTEROP_BUDGET || '80') * 1000);
  const P = new K.Proxies(bin);
  let server = null;
  let ctx = null;
  let userDir = null;
  const cases = CASES.filter((c) => !filter || `${LABEL}: ${c.name}`.includes(filter));
  try {
    if (!bin) throw new Error('--bin is required');
    const { chromium, missing } = B.loadChromium();
    if (missing) {
      for (const c of cases) {
        await r.run(`${LABEL}: ${c.name}`, async () => { if (CI) throw new Fail(missing); throw new Skip(missing); }, 5000);
      }
      return L.finish(r);
    }
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    server = await servePage();
    const pageBase = `http://127.0.0.1:${server.address().port}/case.html`;
    const proxy = await P.start('proxy-chromium', CASES.map((c) => c.rule), { upstream: 'echo' });
    userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wschaos-chromium-'));
    let launchError;
    ({ ctx, launchError } = await B.launch(chromium, userDir, { width: 900, height: 420 }));
    const version = ctx && ctx.browser() ? ctx.browser().version() : '';
    // Registered after the launch, so that on a signal it runs after
    // playwright's own exit handler has killed the browser.
    const dir = userDir;
    process.on('exit', () => { try { fs.rmSync(dir, { recursive: true, force: true }); } catch (e) { /* best effort */ } });
    if (version) console.log(`chromium ${version}`);
    for (const c of cases) {
      await r.run(`${LABEL}: ${c.name}: ${describe(c.want)}`, async () => {
        if (launchError) throw new Fail(launchError);
        const wsPath = c.rule.match.path;
        const wsUrl = `${proxy.url}${wsPath}?case=${c.name}`;
        const page = await ctx.newPage();
        try {
          await page.goto(`${pageBase}?case=${encodeURIComponent(c.name)}&ws=${encodeURIComponent(wsUrl)}`, { timeout: 10000 });
          await page.waitForFunction(() => window.result && window.result.done, null, { timeout: 10000 });
          const got = await page.evaluate(() => window.result);
          const shot = path.join(ARTIFACTS, `${c.name}.png`);
          await page.screenshot({ path: shot });
          const subset = {};
          for (const k of Object.keys(c.want)) subset[k] = got[k];
          check(`what the page saw (events ${JSON.stringify(got.events)})`, subset, c.want);
          return `error event: ${got.error}; screenshot ${path.relative(ROOT, shot)}`;
        } finally {
          await page.close().catch(() => {});
        }
      }, 30000);
    }
  } catch (e) {
    r.fail('suite setup', `${e && e.name}: ${e && e.message}`);
  } finally {
    if (ctx) await Promise.race([ctx.close().catch(() => {}), L.sleep(10000)]);
    if (userDir) fs.rmSync(userDir, { recursive: true, force: true });
    if (server) server.close();
    await P.stopAll();
    L.killChildren();
  }
  return L.finish(r);
}

function describe(want) {
  if (!want.opened) return `error event and close ${want.code} for a refused upgrade`;
  return `close ${want.code} ${JSON.stringify(want.reason)}`;
}

L.runSuite(LABEL, main);
