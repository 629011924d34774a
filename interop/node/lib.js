'use strict';
// Process management, a client wrapper around `ws`, and a tiny test runner.

const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { spawn } = require('child_process');
const WebSocket = require('ws');

const LOG_DIR = process.env.INTEROP_LOG_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'wschaos-interop-node-'));
fs.mkdirSync(LOG_DIR, { recursive: true });

const children = new Set();

function killChildren() {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      try { c.kill('SIGKILL'); } catch (e) { /* already gone */ }
    }
  }
}
process.on('exit', killChildren);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A child process reporting JSON events on stdout, one per line.
class Proc {
  constructor(argv, name) {
    this.name = name;
    this.logPath = path.join(LOG_DIR, `${name}.stderr.log`);
    const err = fs.openSync(this.logPath, 'w');
    this.p = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', err] });
    fs.closeSync(err);
    children.add(this.p);
    this.p.on('error', (err) => this.events.push({ event: 'spawn-error', error: String(err) }));
    this.p.stdin.on('error', () => {});
    this.events = [];
    const eventsLog = fs.openSync(path.join(LOG_DIR, `${name}.events.log`), 'w');
    readline.createInterface({ input: this.p.stdout }).on('line', (line) => {
      fs.writeSync(eventsLog, `${line}\n`);
      try { this.events.push(JSON.parse(line)); } catch (e) { this.events.push({ event: 'unparsed', line }); }
    });
  }

  find(pred) { return this.events.find(pred) || null; }

  async waitEvent(pred, timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const ev = this.find(pred);
      if (ev || Date.now() >= deadline) return ev;
      await sleep(20);
    }
  }

  async waitListening(timeoutMs = 15000) {
    const ev = await this.waitEvent((e) => e.event === 'listening', timeoutMs);
    if (!ev) throw new Error(`${this.name} did not start (exit=${this.p.exitCode}); see ${this.logPath}`);
    return ev.port;
  }

  async stop() {
    if (this.p.exitCode !== null || this.p.signalCode !== null) return;
    const exited = new Promise((r) => this.p.once('exit', r));
    this.p.stdin.end();
    const t = setTimeout(() => this.p.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
  }
}

function eventFor(kind, id) {
  return (ev) => {
    if (ev.event !== kind) return false;
    return new URL(ev.path || '/', 'http://x').searchParams.get('id') === id;
  };
}

let proxyCount = 0;

// The wschaos binary under test. With admin set, start also waits for the
// admin listener's URL (adminURL); env replaces the environment.
class Proxy {
  constructor(bin, upstream, name, extra = [], { env, admin = false } = {}) {
    proxyCount += 1;
    this.name = name || `proxy-${proxyCount}`;
    this.logPath = path.join(LOG_DIR, `${this.name}.log`);
    this.argv = [bin, 'run', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--upstream', upstream, '--log-format', 'json', ...extra];
    const out = fs.openSync(this.logPath, 'w');
    this.p = spawn(bin, this.argv.slice(1), { stdio: ['ignore', out, 'pipe'], env: env || process.env });
    children.add(this.p);
    this.url = null;
    this.port = null;
    this.admin = admin;
    this.adminURL = null;
    this.exit = new Promise((resolve) => {
      this.p.on('exit', (code, signal) => resolve({ code, signal }));
      this.p.on('error', (err) => resolve({ code: null, signal: null, error: String(err) }));
    });
    this.ready = new Promise((resolve) => {
      const rl = readline.createInterface({ input: this.p.stderr });
      rl.on('line', (line) => {
        fs.writeSync(out, line + '\n');
        if (this.listening()) return;
        let ev;
        try { ev = JSON.parse(line); } catch (e) { return; }
        if (ev && ev.msg === 'listening' && ev.url && !this.url) {
          this.url = String(ev.url).replace(/\/$/, '');
          this.port = parseInt(new URL(this.url).port, 10);
        }
        if (ev && ev.msg === 'admin listening' && ev.url && !this.adminURL) {
          this.adminURL = String(ev.url).replace(/\/$/, '');
        }
        if (this.listening()) resolve();
      });
      rl.on('close', resolve);
      this.exit.then(resolve);
    });
  }

  // listening reports whether every URL start waits for has been logged.
  listening() {
    return Boolean(this.url && (this.adminURL || !this.admin));
  }

  async start(timeoutMs = 15000) {
    await Promise.race([this.ready, sleep(timeoutMs)]);
    if (!this.listening()) {
      const what = this.admin ? '"listening" and "admin listening" urls' : 'listening url';
      throw new Error(`proxy ${this.name} did not report its ${what} within ${timeoutMs / 1000}s; argv=${this.argv.join(' ')}; log ${this.logPath}`);
    }
    return this;
  }

  terminate() {
    if (this.p.exitCode === null && this.p.signalCode === null) this.p.kill('SIGTERM');
  }

  signal(sig) {
    if (this.p.exitCode === null && this.p.signalCode === null) this.p.kill(sig);
  }

  // The proxy's JSON log lines so far, parsed (other lines skipped).
  logLines() {
    const out = [];
    for (const line of fs.readFileSync(this.logPath, 'utf8').split('\n')) {
      try {
        const ev = JSON.parse(line);
        if (ev && typeof ev === 'object') out.push(ev);
      } catch (e) { /* not JSON */ }
    }
    return out;
  }

  // The log lines for which pred is true, once there are at least count of
  // them or timeoutMs has passed. The proxy writes a line a moment after
  // what it records (the client may see a close first): a check of a line
  // waits here.
  async waitLog(pred, count = 1, timeoutMs = 2000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const got = this.logLines().filter(pred);
      if (got.length >= count || Date.now() >= deadline) return got;
      await sleep(20);
    }
  }

  async waitExit(timeoutMs) {
    return Promise.race([this.exit, sleep(timeoutMs).then(() => null)]);
  }

  async stop() {
    if (this.p.exitCode !== null || this.p.signalCode !== null) return;
    this.p.kill('SIGTERM');
    if (!(await this.waitExit(10000))) {
      this.p.kill('SIGKILL');
      await this.waitExit(5000);
    }
  }
}

async function startProxy(bin, upstream, name, extra = []) {
  return new Proxy(bin, upstream, name, extra).start();
}

class HttpStatusError extends Error {
  constructor(status) { super(`unexpected HTTP status ${status}`); this.status = status; }
}

// A `ws` client that queues messages, pongs and the close outcome.
class Client {
  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiters = [];
    this.pongs = [];
    this.errors = [];
    this.closeInfo = null;
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        for (const w of this.waiters.splice(0)) w();
      });
    });
    ws.on('message', (data, isBinary) => {
      this.queue.push({ data, isBinary });
      for (const w of this.waiters.splice(0)) w();
    });
    ws.on('pong', (data) => this.pongs.push(Buffer.from(data)));
    ws.on('error', (err) => this.errors.push(String(err)));
  }

  async next(timeoutMs = 10000) {
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length === 0) {
      if (this.closeInfo) throw new Fail(`expected a message, the connection closed with ${JSON.stringify(this.closeInfo)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Fail(`expected a message within ${timeoutMs}ms, got none`);
      await new Promise((r) => { this.waiters.push(r); setTimeout(r, Math.min(left, 200)); });
    }
    return this.queue.shift();
  }

  async nextText(timeoutMs) {
    const m = await this.next(timeoutMs);
    if (m.isBinary) throw new Fail(`expected a text message, got a binary one (${m.data.length} bytes)`);
    return m.data.toString('utf8');
  }

  // Waits for the close event; fails if a message arrives first.
  async expectClosed(timeoutMs = 10000) {
    const r = await Promise.race([this.closed, sleep(timeoutMs).then(() => null)]);
    if (this.queue.length) throw new Fail(`expected the connection to close, got a message ${short(this.queue[0].data.toString())}`);
    if (!r) throw new Fail(`expected the connection to close within ${timeoutMs}ms; it stayed open`);
    return r;
  }

  async close(code, reason) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(code, reason);
    const r = await Promise.race([this.closed, sleep(5000).then(() => null)]);
    if (!r) this.ws.terminate();
    return r;
  }
}

function openWs(url, { protocols, perMessageDeflate = false, timeoutMs = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, {
      perMessageDeflate,
      maxPayload: 64 << 20,
      handshakeTimeout: timeoutMs,
    });
    const client = new Client(ws);
    ws.once('open', () => resolve(client));
    ws.once('unexpected-response', (req, res) => {
      res.resume();
      req.destroy();
      reject(new HttpStatusError(res.statusCode));
    });
    ws.once('close', () => reject(new Error(`connection closed before open: ${client.errors.join('; ')}`)));
  });
}

class Fail extends Error {}
class Skip extends Error {}

function short(v, limit = 200) {
  let s;
  if (Buffer.isBuffer(v)) s = `<Buffer ${v.length} bytes ${v.subarray(0, 24).toString('hex')}${v.length > 24 ? '...' : ''}>`;
  else s = JSON.stringify(v);
  if (s === undefined) s = String(v);
  if (s.length > limit) s = `${s.slice(0, limit)}...(${s.length} chars)`;
  return s;
}

function deepEqual(a, b) {
  if (Buffer.isBuffer(a) && Buffer.isBuffer(b)) return a.equals(b);
  return JSON.stringify(a) === JSON.stringify(b);
}

function check(what, got, want) {
  if (!deepEqual(got, want)) throw new Fail(`${what}: got ${short(got)}, want ${short(want)}`);
}

function checkTrue(what, cond, got) {
  if (!cond) throw new Fail(`${what}: got ${short(got)}`);
}

function checkPayload(what, got, want) {
  // got: {data, isBinary}; want: string (text) or Buffer (binary)
  const wantBinary = Buffer.isBuffer(want);
  if (got.isBinary !== wantBinary) {
    throw new Fail(`${what}: got a ${got.isBinary ? 'binary' : 'text'} message (${got.data.length} bytes), want a ${wantBinary ? 'binary' : 'text'} message`);
  }
  const w = wantBinary ? want : Buffer.from(want, 'utf8');
  const g = Buffer.from(got.data);
  if (!g.equals(w)) {
    let i = 0;
    const n = Math.min(g.length, w.length);
    while (i < n && g[i] === w[i]) i += 1;
    throw new Fail(`${what}: got ${g.length} bytes, want ${w.length} bytes; first difference at byte ${i} (got ${g.subarray(i, i + 16).toString('hex')}, want ${w.subarray(i, i + 16).toString('hex')})`);
  }
}

class Runner {
  constructor(label, budgetMs = 80000) {
    this.label = label;
    this.budgetMs = budgetMs;
    this.deadline = Date.now() + budgetMs;
    this.passed = 0;
    this.failed = 0;
    this.skipped = 0;
    this.failures = [];
  }

  async run(name, fn, timeoutMs = 30000) {
    const t0 = Date.now();
    const remaining = this.deadline - t0;
    if (remaining <= 1000) {
      this.fail(name, `not run: the suite's time budget of ${this.budgetMs / 1000}s is exhausted`);
      return;
    }
    timeoutMs = Math.min(timeoutMs, remaining);
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Fail(`timed out after ${timeoutMs / 1000}s`)), timeoutMs);
    });
    try {
      const note = await Promise.race([fn(), timeout]);
      this.passed += 1;
      console.log(`PASS ${name} [${((Date.now() - t0) / 1000).toFixed(2)}s]${note ? ` (${note})` : ''}`);
    } catch (e) {
      if (e instanceof Skip) {
        this.skipped += 1;
        console.log(`SKIP ${name}: ${e.message}`);
      } else if (e instanceof Fail) {
        this.fail(name, e.message);
      } else if (e instanceof HttpStatusError) {
        this.fail(name, `connection refused by HTTP status ${e.status}`);
      } else {
        this.fail(name, `unexpected ${e && e.name}: ${e && e.message} ${e && e.stack ? e.stack.split('\n')[1] : ''}`);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  fail(name, msg) {
    this.failed += 1;
    this.failures.push(name);
    console.log(`FAIL ${name}\n     ${msg}`);
  }

  summary() {
    if (this.failures.length) {
      console.log(`${this.label} failures:`);
      for (const f of this.failures) console.log(`  - ${f}`);
    }
    if (this.skipped) console.log(`${this.label} skipped: ${this.skipped}`);
    console.log(`${this.label}: ${this.passed} passed, ${this.failed} failed`);
  }
}

// finish prints where the logs are and the runner's summary, and returns
// the suite's exit code.
function finish(r) {
  console.log(`logs: ${LOG_DIR}`);
  r.summary();
  return r.failed ? 1 : 0;
}

// runSuite is a suite's entry point: it runs main, whose result is the
// exit code, reports a crash as one failure under label, and on SIGTERM or
// SIGINT runs cleanup and kills the children before exiting.
function runSuite(label, main, cleanup = () => {}) {
  const die = () => { cleanup(); killChildren(); process.exit(1); };
  process.on('SIGTERM', die);
  process.on('SIGINT', die);
  main().then((rc) => process.exit(rc), (e) => {
    console.log(`FAIL suite crashed: ${e && e.stack}`);
    console.log(`${label}: 0 passed, 1 failed`);
    process.exit(1);
  });
}

module.exports = {
  LOG_DIR, Proc, Proxy, startProxy, Client, openWs, HttpStatusError, Fail, Skip,
  check, checkTrue, checkPayload, short, Runner, eventFor, sleep, killChildren,
  finish, runSuite,
};
