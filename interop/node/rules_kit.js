'use strict';
// Helpers for the rules tests: configuration files, proxies started with
// them, and a `ws` client whose messages, pongs, errors and close are
// recorded with their times.

const fs = require('fs');
const path = require('path');
const { performance } = require('perf_hooks');
const WebSocket = require('ws');
const L = require('./lib');

const { Fail, sleep, short } = L;
const mono = () => performance.now();

function tomlValue(v) {
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return JSON.stringify(v);
  if (v && typeof v === 'object') {
    return `{ ${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)} = ${tomlValue(x)}`).join(', ')} }`;
  }
  throw new Error(`no TOML for ${v}`);
}

// A configuration file: [proxy] seed (if given) and one [[rule]] per object.
function configText(rules, seed) {
  const out = [];
  if (seed !== undefined && seed !== null) out.push('[proxy]', `seed = ${seed}`, '');
  for (const r of rules) {
    out.push('[[rule]]');
    for (const [k, v] of Object.entries(r)) out.push(`${k} = ${tomlValue(v)}`);
    out.push('');
  }
  return out.join('\n');
}

let cfgCount = 0;
function writeConfig(name, rules, seed, text) {
  cfgCount += 1;
  const p = path.join(L.LOG_DIR, `${name}-${cfgCount}.toml`);
  fs.writeFileSync(p, text !== undefined ? text : configText(rules, seed));
  return p;
}

// Writes the file's new content in one step.
function replaceFile(p, text) {
  fs.writeFileSync(`${p}.tmp`, text);
  fs.renameSync(`${p}.tmp`, p);
}

class Proxies {
  constructor(bin) { this.bin = bin; this.started = []; }

  async start(name, rules, { upstream = 'echo', seed = 42, configPath } = {}) {
    const cfg = configPath || writeConfig(name, rules, seed);
    const p = new L.Proxy(this.bin, upstream, name, ['--config', cfg]);
    this.started.push(p);
    await p.start();
    p.configPath = cfg;
    return p;
  }

  async stopAll() { await Promise.all(this.started.map((p) => p.stop())); }
}

const isFault = (rule) => (e) => e.msg === 'fault fired' && (rule === undefined || e.rule === rule);

// The 'fault fired' lines so far: for checks that none was written.
function faults(proxy, rule) {
  return proxy.logLines().filter(isFault(rule));
}

// The 'fault fired' lines, once there are count of them (or 2s passed).
function waitFaults(proxy, rule, count = 1) {
  return proxy.waitLog(isFault(rule), count);
}

// Wall-clock milliseconds of a log line's "ts".
function parseTs(ts) {
  return typeof ts === 'number' ? ts * 1000 : Date.parse(ts);
}

class HttpReject extends Error {
  constructor(status, headers, body) {
    super(`upgrade refused with HTTP ${status}`);
    this.status = status;
    this.headers = headers;
    this.body = body;
  }
}

// A client connection recording everything it sees.
class Sess {
  constructor(ws, started) {
    this.ws = ws;
    this.started = started; // monotonic ms just before connecting
    this.opened = null;
    this.openedWall = null;
    this.msgs = []; // {mono, wall, data (string or Buffer), isBinary}
    this.pongs = []; // {mono, data}
    this.errors = []; // {mono, code, message}
    this.closeInfo = null; // {code, reason, mono}
    this.ended = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString('utf8'), mono: mono() };
        resolve(this.closeInfo);
      });
    });
    ws.on('message', (data, isBinary) => {
      const buf = Buffer.from(data);
      this.msgs.push({ mono: mono(), wall: Date.now(), data: isBinary ? buf : buf.toString('utf8'), isBinary });
    });
    ws.on('pong', (data) => this.pongs.push({ mono: mono(), data: Buffer.from(data).toString() }));
    ws.on('error', (err) => this.errors.push({ mono: mono(), code: err.code || null, message: String(err.message) }));
    // ws reports a broken connection only as close 1006; how the TCP
    // connection ended (RST or FIN) is seen on the socket itself.
    this.socketErrors = []; // error codes of the TCP socket, e.g. ECONNRESET
    this.socketEnd = false; // the peer's FIN was read (a clean EOF)
    ws.on('upgrade', (res) => {
      res.socket.on('error', (err) => this.socketErrors.push(err.code || String(err.message)));
      res.socket.on('end', () => { this.socketEnd = true; });
    });
  }

  static open(url, { protocols, headers } = {}) {
    return new Promise((resolve, reject) => {
      const started = mono();
      const ws = new WebSocket(url, protocols || [], { perMessageDeflate: false, handshakeTimeout: 10000, headers });
      const s = new Sess(ws, started);
      ws.once('open', () => { s.opened = mono(); s.openedWall = Date.now(); resolve(s); });
      ws.once('unexpected-response', (req, res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          req.destroy();
          reject(new HttpReject(res.statusCode, res.headers, Buffer.concat(chunks).toString('utf8')));
        });
        res.on('error', () => reject(new HttpReject(res.statusCode, res.headers, null)));
      });
      ws.once('close', () => reject(new Error(`connection closed before open: ${s.errors.map((e) => e.message).join('; ')}`)));
    });
  }

  get isEnded() { return this.closeInfo !== null; }

  outcome() { return this.closeInfo ? `code ${this.closeInfo.code} reason ${JSON.stringify(this.closeInfo.reason)}` : 'open'; }

  texts() { return this.msgs.map((m) => m.data); }

  async waitEnd(timeoutMs = 5000) {
    const r = await Promise.race([this.ended, sleep(timeoutMs).then(() => null)]);
    if (!r) throw new Fail(`expected the connection to end within ${timeoutMs}ms; it stayed open (messages ${short(this.texts())})`);
    return r;
  }

  async staysOpen(ms) {
    const r = await Promise.race([this.ended, sleep(ms).then(() => null)]);
    if (r) throw new Fail(`expected the connection to stay open; it ended after ${Math.round(r.mono - this.opened)}ms with ${this.outcome()}`);
  }

  async waitMsg(pred, timeoutMs = 5000, after = 0) {
    const deadline = mono() + timeoutMs;
    let i = after;
    for (;;) {
      for (; i < this.msgs.length; i += 1) if (pred(this.msgs[i].data)) return this.msgs[i];
      if (this.isEnded) throw new Fail(`expected a message; the connection ended with ${this.outcome()}`);
      if (mono() >= deadline) throw new Fail(`expected a message within ${timeoutMs}ms; got none`);
      await sleep(5);
    }
  }

  // Sends text and waits for it to come back; the round trip in ms.
  async echo(text, timeoutMs = 5000) {
    const mark = this.msgs.length;
    const t0 = mono();
    this.ws.send(text);
    const m = await this.waitMsg((d) => d === text, timeoutMs, mark);
    return m.mono - t0;
  }

  async terminate() {
    if (!this.isEnded) {
      this.ws.terminate();
      await Promise.race([this.ended, sleep(3000)]);
    }
  }

  async close() {
    if (!this.isEnded && this.ws.readyState === WebSocket.OPEN) {
      this.ws.close(1000);
      await Promise.race([this.ended, sleep(2000)]);
    }
    await this.terminate();
  }
}

const fmt = (x) => (x === null || x === undefined ? 'n/a' : `${Math.round(x)}ms`);

function checkBetween(what, got, lo, hi) {
  if (!(got >= lo && got <= hi)) throw new Fail(`${what}: got ${fmt(got)}, want between ${fmt(lo)} and ${fmt(hi)}`);
}

module.exports = {
  configText, writeConfig, replaceFile, Proxies, faults, waitFaults, parseTs, HttpReject, Sess, mono, fmt, checkBetween,
};
