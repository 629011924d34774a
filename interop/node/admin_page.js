'use strict';
// The admin page in headless Chromium, driven by playwright-core: the live
// sessions table and its per-session buttons, the test client's close
// codes and reconnects, close all, the event stream, a rule's switch, the
// API's errors in the message area, and the token form.
//
// Usage: node interop/node/admin_page.js --bin /tmp/wschaos [--filter TEXT]
// Environment: INTEROP_CHROMIUM (default /usr/bin/chromium); CI=true makes a
// missing browser a failure instead of a skip.
//
// Full-page screenshots of each step are saved under artifacts/admin/ at
// the repository root.

const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const B = require('./browser');
const L = require('./lib');

const { Fail, Skip, check, checkTrue, Runner, sleep } = L;

const LABEL = 'admin-page';
const ROOT = path.resolve(__dirname, '..', '..');
const ARTIFACTS = path.join(ROOT, 'artifacts', 'admin');
const CI = process.env.CI === 'true';
const VIEWPORT = { width: 1366, height: 768 };
const TOKEN = 's3cret';
const RULE = 'hourly-restart';
const CONFIG = `# one rule that never fires during the test
[[rule]]
name = "${RULE}"
after = "1h"
action = "close"
code = "service_restart"
reason = "hourly restart"
`;
const CLIENT_PATH = '/admin-page-test';

// --- the proxy under test, with its admin listener

class Wschaos extends L.Proxy {
  constructor(bin, name, { configPath, token } = {}) {
    const env = Object.assign({}, process.env);
    delete env.WSCHAOS_ADMIN_TOKEN;
    if (token) env.WSCHAOS_ADMIN_TOKEN = token;
    super(bin, 'echo', name, configPath ? ['--config', configPath] : [], { env, admin: true });
  }

  get proxyURL() { return this.url; }

  async start(timeoutMs = 15000) {
    await super.start(timeoutMs);
    for (const u of [this.proxyURL, this.adminURL]) {
      if (new URL(u).hostname !== '127.0.0.1') throw new Error(`${this.name} listens on ${u}, not on 127.0.0.1`);
    }
    return this;
  }
}

// GET on the admin API from node, as a second opinion on what the page did.
function apiGet(base, p, token) {
  return new Promise((resolve, reject) => {
    const u = new URL(p, base);
    if (u.hostname !== '127.0.0.1') { reject(new Error(`refusing to request ${u.href}`)); return; }
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const req = http.get(u, { headers, timeout: 5000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body = null;
        try { body = JSON.parse(text); } catch (e) { /* not JSON */ }
        resolve({ status: res.statusCode, body, text });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${u.href}: no answer within 5s`)));
    req.on('error', reject);
  });
}

async function until(what, fn, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last.ok) return last;
    if (Date.now() >= deadline) throw new Fail(`${what}: not within ${timeoutMs / 1000}s; last seen ${L.short(last.seen)}`);
    await sleep(100);
  }
}

// --- reading the page

// What the page shows of the test client and the sessions table.
function pageState(page) {
  return page.evaluate(() => {
    const t = (id) => (document.getElementById(id) ? document.getElementById(id).textContent.trim() : null);
    return {
      state: t('client-state'),
      attempts: t('client-attempts'),
      lastCode: t('client-last-code'),
      lastReason: t('client-last-reason'),
      rows: [...document.querySelectorAll('#sessions-body tr[data-session-row]')].map((tr) => ({
        id: tr.dataset.sessionRow, path: tr.children[2].textContent,
      })),
      messages: [...document.querySelectorAll('#messages .note')].map((n) => `${n.className}: ${n.querySelector('.note-text').textContent}`),
    };
  });
}

// Waits for pred(page state) in the page's terms; the failure names what was
// seen last.
async function waitState(page, what, pred, timeoutMs = 8000) {
  const deadline = Date.now() + timeoutMs;
  let st;
  for (;;) {
    st = await pageState(page);
    if (pred(st)) return st;
    if (Date.now() >= deadline) throw new Fail(`${what}: not within ${timeoutMs / 1000}s; the page shows ${L.short(st, 600)}`);
    await sleep(100);
  }
}

async function shot(page, name) {
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file, fullPage: true, timeout: 10000 });
  return path.relative(ROOT, file);
}

function rowWith(st, pathText, notIds = []) {
  return st.rows.find((r) => r.path === pathText && !notIds.includes(r.id)) || null;
}

async function main() {
  const argv = process.argv.slice(2);
  const arg = (name) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : undefined; };
  const bin = arg('--bin');
  const filter = arg('--filter') || '';
  const r = new Runner(LABEL, parseFloat(process.env.INTEROP_BUDGET || '80') * 1000);
  const procs = [];
  let ctx = null;
  let userDir = null;
  let tokenClient = null;

  const cases = [];
  const test = (name, fn, timeoutMs = 20000) => cases.push({ name: `${LABEL}: ${name}`, fn, timeoutMs });

  // Shared between the steps, which build on each other.
  const S = { page: null, proxy: null, ids: [], attempts: 0, pageErrors: [], cspErrors: [] };
  const need = (...keys) => {
    for (const k of keys) if (S[k] === null || S[k] === undefined) throw new Fail(`an earlier step did not get ${k}`);
  };
  const lastId = () => {
    if (!S.ids.length) throw new Fail('an earlier step did not find the test client\'s session');
    return S.ids[S.ids.length - 1];
  };
  // Waits for the client to be open again on a new session; returns its id.
  const reconnected = async (what, attemptsBefore) => {
    const st = await waitState(S.page, what, (s) => s.state === 'open'
      && parseInt(s.attempts, 10) > attemptsBefore
      && rowWith(s, CLIENT_PATH, S.ids) !== null
      && !s.rows.some((x) => x.id === lastId()));
    const row = rowWith(st, CLIENT_PATH, S.ids);
    S.ids.push(row.id);
    S.attempts = parseInt(st.attempts, 10);
    return st;
  };

  test('the page loads: header with version and proxy URL, the rule, no session', async () => {
    need('page', 'proxy');
    const info = await S.page.evaluate(() => ({
      version: document.getElementById('info-version').textContent,
      proxy: document.getElementById('info-proxy').textContent,
      upstream: document.getElementById('info-upstream').textContent,
      seed: document.getElementById('info-seed').textContent,
    }));
    const api = await apiGet(S.proxy.adminURL, '/api/info');
    check('the header\'s proxy URL', info.proxy, S.proxy.proxyURL);
    check('the header\'s upstream', info.upstream, 'echo');
    checkTrue('the header shows the version', /^v\d/.test(info.version), info.version);
    const seedText = /"seed"\s*:\s*(\d+)/.exec(api.text);
    check('the header\'s seed, digit for digit as /api/info wrote it', info.seed, seedText ? seedText[1] : null);
    await S.page.waitForSelector(`#rules-body input[data-rule="${RULE}"]`, { timeout: 5000 });
    const st = await pageState(S.page);
    check('sessions in the table', st.rows, []);
    return `proxy ${info.proxy}, seed ${info.seed}`;
  });

  test('the test client opens and its session appears in the sessions table', async () => {
    need('page');
    await S.page.fill('#client-path', CLIENT_PATH);
    await S.page.click('#client-start');
    const st = await waitState(S.page, 'client open and its session in the table',
      (s) => s.state === 'open' && rowWith(s, CLIENT_PATH) !== null);
    const row = rowWith(st, CLIENT_PATH);
    S.ids.push(row.id);
    S.attempts = parseInt(st.attempts, 10);
    check('attempts', S.attempts, 1);
    // The echo comes back and the table counts it.
    await S.page.waitForFunction(() => parseInt(document.getElementById('client-echoed').textContent, 10) >= 1, null, { timeout: 5000 });
    await S.page.waitForFunction((id) => {
      const tr = document.querySelector(`#sessions-body tr[data-session-row="${id}"]`);
      return tr && /^[1-9]\d* msgs?/.test(tr.children[5].textContent) && /^[1-9]\d* msgs?/.test(tr.children[6].textContent);
    }, row.id, { timeout: 5000 });
    const chip = await S.page.$(`#sessions-body tr[data-session-row="${row.id}"] .chip[data-rule="${RULE}"]`);
    checkTrue(`the session's rules show ${RULE}`, chip !== null, null);
    return `session ${row.id}; screenshot ${await shot(S.page, '01-sessions.png')}`;
  });

  test('1012 on the session\'s row: the client shows 1012, then reconnects on a new session', async () => {
    need('page');
    const id = lastId();
    await S.page.click(`#sessions-body button[data-session="${id}"][data-action="close"][data-code="1012"]`);
    const st = await waitState(S.page, 'last close code 1012', (s) => s.lastCode === '1012');
    check('last close reason', st.lastReason, '“service restart”');
    const first = await S.page.$eval('#client-closes tr', (tr) => [...tr.children].map((td) => td.textContent));
    check('the close list\'s newest row: code, reason, clean', first.slice(1, 4), ['1012', 'service restart', 'yes']);
    const shot2 = await shot(S.page, '02-closed-1012.png');
    const before = S.attempts;
    const st2 = await reconnected('the client open again on a new session, the old one gone', before);
    check('attempts after one reconnect', parseInt(st2.attempts, 10), before + 1);
    const ev = await apiGet(S.proxy.adminURL, '/api/events');
    const fault = (ev.body || []).find((e) => e.kind === 'fault' && String(e.session) === id);
    check('the fault event of GET /api/events', fault && { rule: fault.rule, action: fault.action, code: fault.code, reason: fault.reason },
      { rule: 'manual', action: 'close', code: 1012, reason: 'service restart' });
    return `session ${id} -> ${lastId()}; screenshots ${shot2}, ${await shot(S.page, '03-reconnected.png')}`;
  });

  test('reset on the new session: the client shows 1006, not clean', async () => {
    need('page');
    const id = lastId();
    await S.page.click(`#sessions-body button[data-session="${id}"][data-action="reset"]`);
    const st = await waitState(S.page, 'last close code 1006', (s) => s.lastCode === '1006');
    check('last close reason', st.lastReason, '');
    const first = await S.page.$eval('#client-closes tr', (tr) => [...tr.children].map((td) => td.textContent));
    check('the close list\'s newest row: code, clean', [first[1], first[3].startsWith('no')], ['1006', true]);
    const file = await shot(S.page, '04-reset-1006.png');
    await reconnected('the client open again after the reset', S.attempts);
    return `session ${id}; screenshot ${file}`;
  });

  test('custom close: the API\'s error for 1006 is shown in the message area; 4000 reaches the client', async () => {
    need('page');
    const id = lastId();
    await S.page.click(`#sessions-body button[data-session="${id}"][data-action="custom"]`);
    await S.page.waitForSelector('#custom-close:not([hidden])', { timeout: 5000 });
    await S.page.fill('#custom-code', '1006');
    await S.page.fill('#custom-reason', '');
    await S.page.click('#custom-send');
    const st = await waitState(S.page, 'an error in the message area',
      (s) => s.messages.some((m) => m.includes('note-error') && m.includes('1006')));
    const msg = st.messages.find((m) => m.includes('note-error') && m.includes('1006'));
    checkTrue('the message names the request and the API\'s reason',
      msg.includes(`POST /api/sessions/${id}/close: 400`) && msg.includes('cannot be sent'), msg);
    checkTrue('the session is still open', st.rows.some((x) => x.id === id) && st.state === 'open', st);
    const file = await shot(S.page, '05-api-error.png');
    await S.page.fill('#custom-code', '4000');
    await S.page.fill('#custom-reason', 'custom from the page');
    await S.page.click('#custom-send');
    const st2 = await waitState(S.page, 'last close code 4000', (s) => s.lastCode === '4000');
    check('last close reason', st2.lastReason, '“custom from the page”');
    check('the popover closed', await S.page.$eval('#custom-close', (f) => f.hidden), true);
    await reconnected('the client open again after the custom close', S.attempts);
    return `screenshot ${file}`;
  });

  test('close all with the default code and a path glob: "closed 1 session", the client sees 1001', async () => {
    need('page');
    await S.page.fill('#close-all-path', '/admin-page-*');
    await S.page.click('#close-all-form button[data-action="close-all"]');
    await S.page.waitForFunction(() => document.getElementById('close-all-result').dataset.closed !== undefined, null, { timeout: 5000 });
    const result = await S.page.$eval('#close-all-result', (e) => e.textContent);
    check('close all\'s result', result, 'closed 1 session matching /admin-page-*');
    const st = await waitState(S.page, 'last close code 1001', (s) => s.lastCode === '1001');
    check('last close reason', st.lastReason, '');
    const file = await shot(S.page, '06-close-all.png');
    await reconnected('the client open again after close all', S.attempts);
    return `screenshot ${file}`;
  });

  test('the event stream lists the faults newest first', async () => {
    need('page');
    const got = await until('fault rows 1001, 4000, reset, 1012 in the events table', async () => {
      const rows = await S.page.$$eval('#events-body tr[data-kind="fault"]', (trs) => trs.map((tr) => ({
        session: tr.dataset.session, code: tr.dataset.code, what: tr.children[5].textContent,
      })));
      const seen = rows.map((x) => `${x.what}:${x.code}`);
      return { ok: JSON.stringify(seen) === JSON.stringify(['manual · close:1001', 'manual · close:4000', 'manual · reset:', 'manual · close:1012']), seen };
    });
    const status = await S.page.$eval('#events-status', (e) => e.textContent);
    check('the stream\'s status', status, 'live');
    const opened = await S.page.$$eval('#events-body tr[data-kind="opened"]', (trs) => trs.length);
    check('opened events (one per session of the client)', opened, S.ids.length);
    return got.seen.join(', ');
  });

  test(`the switch of rule ${RULE}: off, GET /api/rules says disabled; on again`, async () => {
    need('page');
    const sel = `#rules-body input[data-rule="${RULE}"]`;
    check('the switch at first', await S.page.$eval(sel, (i) => i.checked), true);
    const enabled = async () => {
      const res = await apiGet(S.proxy.adminURL, '/api/rules');
      const rule = (res.body || []).find((x) => x.name === RULE);
      return rule ? rule.enabled : null;
    };
    await S.page.click(sel);
    await until('GET /api/rules: enabled false', async () => { const e = await enabled(); return { ok: e === false, seen: e }; });
    await S.page.waitForFunction((s) => !document.querySelector(s).checked && !document.querySelector(s).disabled, sel, { timeout: 5000 });
    await sleep(1200); // a poll later, the page still agrees
    check('the switch a poll later', await S.page.$eval(sel, (i) => i.checked), false);
    const file = await shot(S.page, '07-rule-disabled.png');
    await S.page.click(sel);
    await until('GET /api/rules: enabled true', async () => { const e = await enabled(); return { ok: e === true, seen: e }; });
    await S.page.waitForFunction((s) => document.querySelector(s).checked, sel, { timeout: 5000 });
    return `screenshot ${file}`;
  });

  test('stop: the client closes with 1000 and stays stopped; its session leaves the table', async () => {
    need('page');
    const before = S.attempts;
    await S.page.click('#client-stop');
    await waitState(S.page, 'stopped with 1000', (s) => s.state === 'stopped' && s.lastCode === '1000' && s.rows.length === 0);
    await sleep(1000);
    const st = await pageState(S.page);
    check('state and attempts a second later', [st.state, parseInt(st.attempts, 10)], ['stopped', before]);
  });

  test('no script errors and no Content-Security-Policy violations', async () => {
    need('page');
    check('uncaught script errors', S.pageErrors, []);
    check('CSP violations', S.cspErrors, []);
  });

  test('token: the page asks for it, refuses a wrong one, then loads the sessions table', async () => {
    const proxy = await new Wschaos(S.bin, 'proxy-admin-token', { token: TOKEN }).start();
    procs.push(proxy);
    const unauth = await apiGet(proxy.adminURL, '/api/sessions');
    check('GET /api/sessions without the token', unauth.status, 401);
    tokenClient = await L.openWs(`${proxy.proxyURL}/token-run?x=1`);
    const page = await ctx.newPage();
    page.on('pageerror', (e) => S.pageErrors.push(String(e)));
    try {
      await page.goto(`${proxy.adminURL}/`, { timeout: 10000 });
      await page.waitForSelector('#token-card:not([hidden])', { timeout: 5000 });
      checkTrue('the main area is hidden while the token is missing', await page.$eval('#main', (m) => m.hidden), null);
      const file1 = await shot(page, '08-token.png');
      await page.fill('#token-input', 'wrong');
      await page.click('#token-submit');
      await page.waitForFunction(() => !document.getElementById('token-card').hidden
        && document.getElementById('token-note').textContent.includes('refused'), null, { timeout: 5000 });
      await page.fill('#token-input', TOKEN);
      await page.click('#token-submit');
      const st = await waitState(page, 'the sessions table with the node client\'s session',
        (s) => s.rows.some((x) => x.path === '/token-run?x=1'));
      check('sessions in the table', st.rows.length, 1);
      check('the token card', await page.$eval('#token-card', (c) => c.hidden), true);
      await page.waitForFunction(() => document.getElementById('events-status').textContent === 'live'
        && document.querySelector('#events-body tr[data-kind="opened"]') !== null, null, { timeout: 5000 });
      check('the token in sessionStorage', await page.evaluate(() => Object.values(sessionStorage)), [TOKEN]);
      const file2 = await shot(page, '09-token-sessions.png');
      // Asked once: a reload uses the kept token.
      await page.reload({ timeout: 10000 });
      await waitState(page, 'the table again after a reload', (s) => s.rows.length === 1);
      check('the token card after a reload', await page.$eval('#token-card', (c) => c.hidden), true);
      return `screenshots ${file1}, ${file2}`;
    } finally {
      await page.close().catch(() => {});
    }
  }, 30000);

  try {
    if (!bin) throw new Error('--bin is required');
    S.bin = bin;
    const selected = cases.filter((c) => !filter || c.name.includes(filter));
    const { chromium, missing } = B.loadChromium();
    if (missing) {
      for (const c of selected) {
        await r.run(c.name, async () => { if (CI) throw new Fail(missing); throw new Skip(missing); }, 5000);
      }
      return finish(r);
    }
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    for (const f of fs.readdirSync(ARTIFACTS)) if (f.endsWith('.png')) fs.rmSync(path.join(ARTIFACTS, f), { force: true });

    const cfg = path.join(L.LOG_DIR, 'admin-page.toml');
    fs.writeFileSync(cfg, CONFIG);
    S.proxy = await new Wschaos(bin, 'proxy-admin-page', { configPath: cfg }).start();
    procs.push(S.proxy);

    userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wschaos-admin-page-'));
    let launchError;
    ({ ctx, launchError } = await B.launch(chromium, userDir, VIEWPORT));
    if (ctx && ctx.browser()) console.log(`chromium ${ctx.browser().version()}`);
    if (!launchError) {
      // Nothing but the two proxies on 127.0.0.1.
      await ctx.route('**/*', (route) => {
        const u = new URL(route.request().url());
        if (u.hostname === '127.0.0.1') route.continue();
        else route.abort();
      });
      const page = ctx.pages()[0] || await ctx.newPage();
      page.setDefaultTimeout(10000);
      page.on('pageerror', (e) => S.pageErrors.push(String(e)));
      page.on('console', (m) => {
        if (/Content Security Policy|Refused to (execute|apply|load|connect)/i.test(m.text())) S.cspErrors.push(m.text());
      });
      try {
        await page.goto(`${S.proxy.adminURL}/`, { timeout: 10000 });
        await page.waitForFunction(() => document.getElementById('info-proxy').textContent.startsWith('ws://'), null, { timeout: 10000 });
        S.page = page;
      } catch (e) {
        launchError = `opening the admin page ${S.proxy.adminURL}/ failed: ${e && e.message ? e.message.split('\n')[0] : e}`;
      }
    }
    for (const c of selected) {
      await r.run(c.name, async () => {
        if (launchError) throw new Fail(launchError);
        return c.fn();
      }, c.timeoutMs);
    }
  } catch (e) {
    r.fail('suite setup', `${e && e.name}: ${e && e.message}`);
  } finally {
    if (tokenClient) tokenClient.ws.terminate();
    if (ctx) await Promise.race([ctx.close().catch(() => {}), sleep(10000)]);
    if (userDir) fs.rmSync(userDir, { recursive: true, force: true });
    await Promise.all(procs.map((p) => p.stop()));
    L.killChildren();
  }
  return finish(r);
}

function finish(r) {
  console.log(`screenshots: ${path.relative(ROOT, ARTIFACTS)}/`);
  return L.finish(r);
}

L.runSuite(LABEL, main);
