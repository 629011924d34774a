'use strict';
// Interop tests with the `ws` package as the client.
//
// Usage: node interop/node/suite.js --bin PATH/TO/wschaos
//
// Upstreams: interop/node/upstream.js (ws), interop/py/upstream.py
// (Python websockets, when importable by INTEROP_PYTHON, default
// /usr/bin/python3) and interop/py/rawupstream.py (hand-written frames).

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const net = require('net');
const path = require('path');
const { execFileSync } = require('child_process');
const L = require('./lib');

const { Fail, Skip, check, checkTrue, checkPayload, eventFor, sleep, openWs } = L;

const HERE = __dirname;
const ROOT = path.dirname(HERE);
const CI = process.env.CI === 'true';
const PYTHON = process.env.INTEROP_PYTHON || '/usr/bin/python3';
const SIZES = [0, 125, 126, 65535, 65536, 16 << 20];
const CLOSE_CODES = [1000, 1001, 1011, 3000, 4999];

let ids = 0;
const tid = () => { ids += 1; return `js${ids}`; };

function argValue(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function payload(kind, n) {
  const raw = crypto.randomBytes(n);
  if (kind === 'binary') return raw;
  for (let i = 0; i < n; i += 1) raw[i] = 0x20 + (raw[i] % 95);
  return raw.toString('latin1');
}

async function expectHttpStatus(url, want) {
  let client;
  try {
    client = await openWs(url);
  } catch (e) {
    if (e instanceof L.HttpStatusError) {
      check('HTTP status seen by the client', e.status, want);
      return;
    }
    throw new Fail(`HTTP status seen by the client: got error ${e.message}, want ${want}`);
  }
  await client.close(1000);
  throw new Fail(`HTTP status seen by the client: got 101 (connection opened), want ${want}`);
}

function libraryTests(t) {
  const tests = [];
  const label = `node-client->proxy->${t.name}-upstream`;
  const add = (name, fn, timeoutMs = 30000) => tests.push([`${label}: ${name}`, fn, timeoutMs]);

  for (const kind of ['text', 'binary']) {
    for (const n of SIZES) {
      add(`echo ${kind} ${n} bytes`, async () => {
        const data = payload(kind, n);
        const c = await openWs(t.url(`/echo?id=${tid()}`));
        c.ws.send(data, { binary: kind === 'binary' });
        checkPayload(`echoed ${kind} message of ${n} bytes`, await c.next(60000), data);
        const closed = await c.close(1000);
        check('close code after normal close', closed && closed.code, 1000);
      }, n > 65536 ? 90000 : 30000);
    }
  }

  add('echo multi-byte utf-8 text', async () => {
    const data = 'héllo wörld ✓ 日本語 🎉'.repeat(50);
    const c = await openWs(t.url(`/echo?id=${tid()}`));
    c.ws.send(data);
    checkPayload('echoed utf-8 text', await c.next(), data);
    await c.close(1000);
  });

  for (const kind of ['text', 'binary']) {
    add(`fragmented ${kind} message with a ping between fragments`, async () => {
      let parts = ['frag-one ', 'frag-two ', 'frag-three'];
      if (kind === 'binary') parts = parts.map((p) => Buffer.from(p));
      const pingData = Buffer.from('mid-ping');
      const id = tid();
      const c = await openWs(t.url(`${t.name === 'py' ? '/frames' : '/echo'}?id=${id}`));
      const binary = kind === 'binary';
      c.ws.send(parts[0], { binary, fin: false });
      c.ws.ping(pingData);
      c.ws.send(parts[1], { binary, fin: false });
      c.ws.send(parts[2], { binary, fin: true });
      const reply = await c.next();
      for (let i = 0; i < 100 && c.pongs.length === 0; i += 1) await sleep(20);
      check('pong payloads received by the client', c.pongs, [pingData]);
      const ev = await t.proc.waitEvent(eventFor('ping', id));
      check('ping payload seen by the upstream', ev && ev.data, pingData.toString('hex'));
      if (t.name === 'py') {
        const frames = JSON.parse(reply.data.toString());
        const op = kind === 'text' ? 1 : 2;
        const hex = (p) => Buffer.from(p).toString('hex');
        check('frames received by the upstream', frames, [
          { op, fin: false, rsv1: false, data: hex(parts[0]) },
          { op: 9, fin: true, rsv1: false, data: pingData.toString('hex') },
          { op: 0, fin: false, rsv1: false, data: hex(parts[1]) },
          { op: 0, fin: true, rsv1: false, data: hex(parts[2]) },
        ]);
      } else {
        const whole = kind === 'text' ? parts.join('') : Buffer.concat(parts);
        checkPayload('reassembled fragmented message echoed', reply, whole);
      }
      await c.close(1000);
    });
  }

  for (const size of [0, 14, 125]) {
    add(`ping ${size}-byte payload round trip`, async () => {
      const data = Buffer.alloc(size);
      for (let i = 0; i < size; i += 1) data[i] = (i * 7 + 3) % 256;
      const id = tid();
      const c = await openWs(t.url(`/echo?id=${id}`));
      c.ws.ping(data);
      for (let i = 0; i < 250 && c.pongs.length === 0; i += 1) await sleep(20);
      await sleep(200);
      check('pong payloads received by the client', c.pongs, [data]);
      const ev = await t.proc.waitEvent(eventFor('ping', id));
      check('ping payload seen by the upstream', ev && ev.data, data.toString('hex'));
      await c.close(1000);
    });
  }

  add('pong is answered by the upstream, not the proxy', async () => {
    const id = tid();
    const c = await openWs(t.url(`/echo?id=${id}&pongdelay=600`));
    const t0 = Date.now();
    c.ws.ping(Buffer.from('slow'));
    for (let i = 0; i < 250 && c.pongs.length === 0; i += 1) await sleep(10);
    const elapsed = Date.now() - t0;
    checkTrue('pong must come from the upstream, which delays it 600ms (elapsed ms)', elapsed >= 550, elapsed);
    await sleep(200);
    check('pongs received', c.pongs, [Buffer.from('slow')]);
    await c.close(1000);
    return `pong after ${elapsed}ms`;
  });

  add('upstream-initiated ping answered by the client', async () => {
    const id = tid();
    const data = `srv-ping-${id}`;
    const c = await openWs(t.url(`/serverping?id=${id}&data=${data}`));
    const pings = [];
    c.ws.on('ping', (d) => pings.push(Buffer.from(d)));
    c.ws.send('go');
    check('upstream message after its ping was answered', await c.nextText(), 'pong-received');
    check('pings received by the client', pings, [Buffer.from(data)]);
    const ev = await t.proc.waitEvent(eventFor('pong', id));
    check('pong seen by the upstream (payload hex, count)', ev && [ev.data, ev.count], [Buffer.from(data).toString('hex'), 1]);
    await c.close(1000);
  });

  for (const code of CLOSE_CODES) {
    const reason = `client bye ${code} ✓`;
    add(`client-initiated close ${code} with reason`, async () => {
      const id = tid();
      const c = await openWs(t.url(`/echo?id=${id}`));
      c.ws.send('x');
      check('echo before close', await c.nextText(), 'x');
      const closed = await c.close(code, reason);
      const ev = await t.proc.waitEvent(eventFor('closed', id));
      check('close seen by the upstream (code, reason)', ev && [ev.code, ev.reason], [code, reason]);
      check('close echoed back to the client (code, reason)', closed && [closed.code, closed.reason], [code, reason]);
    });
  }

  add('client-initiated close without a status code', async () => {
    const id = tid();
    const c = await openWs(t.url(`/echo?id=${id}`));
    c.ws.send('x');
    check('echo before close', await c.nextText(), 'x');
    const closed = await c.close();
    const ev = await t.proc.waitEvent(eventFor('closed', id));
    check('close seen by the upstream (code, reason)', ev && [ev.code, ev.reason], [1005, '']);
    check('close seen by the client (code, reason)', closed && [closed.code, closed.reason], [1005, '']);
  });

  for (const code of CLOSE_CODES) {
    const reason = `server bye ${code} ✓`;
    add(`server-initiated close ${code} with reason`, async () => {
      const id = tid();
      const q = new URLSearchParams({ id, code: String(code), reason }).toString();
      const c = await openWs(t.url(`/close?${q}`));
      c.ws.send('go');
      const closed = await c.expectClosed();
      check('close seen by the client (code, reason)', [closed.code, closed.reason], [code, reason]);
      const ev = await t.proc.waitEvent(eventFor('closed', id));
      check('close echo seen by the upstream (code)', ev && ev.code, code);
    });
  }

  add('subprotocol selection [a,b] -> b', async () => {
    const id = tid();
    const c = await openWs(t.url(`/echo?id=${id}`), { protocols: ['a', 'b'] });
    check('subprotocol seen by the client', c.ws.protocol, 'b');
    const ev = await t.proc.waitEvent(eventFor('open', id));
    check('subprotocols offered at the upstream', ev && ev.protocols, ['a', 'b']);
    check('subprotocol chosen by the upstream', ev && ev.protocol, 'b');
    c.ws.send('sub');
    check('echo', await c.nextText(), 'sub');
    await c.close(1000);
  });

  add('permessage-deflate negotiated end to end', async () => {
    const id = tid();
    const c = await openWs(t.url(`/echo?id=${id}`), { perMessageDeflate: true });
    const names = c.ws.extensions.split(',').filter(Boolean);
    checkTrue('client negotiated extensions include permessage-deflate', names.includes('permessage-deflate'), names);
    const ev = await t.proc.waitEvent(eventFor('open', id));
    checkTrue('upstream negotiated extensions include permessage-deflate',
      ev && ev.extensions.includes('permessage-deflate'), ev);
    const text = 'wschaos compressible text '.repeat(4000);
    const binary = Buffer.alloc(256 * 512);
    for (let i = 0; i < binary.length; i += 1) binary[i] = i % 256;
    c.ws.send(text);
    checkPayload('compressed text echo', await c.next(), text);
    c.ws.send(binary);
    checkPayload('compressed binary echo', await c.next(), binary);
    c.ws.send('short');
    checkPayload('short text echo', await c.next(), 'short');
    const closed = await c.close(1000);
    check('close code', closed && closed.code, 1000);
  });

  add('upstream answers 403 to the upgrade', () => expectHttpStatus(t.url(`/forbidden?id=${tid()}`), 403));

  add('request path and query forwarded', async () => {
    const p = `/deep/pathinfo?id=${tid()}&a=1&b=x%20y`;
    const c = await openWs(t.url(p));
    check('request path+query seen by the upstream', await c.nextText(), p);
    await c.close(1000);
  });

  return tests;
}

function rawUpstreamViolationTests(raw, proxy, names) {
  return names.map((name) => [`node-client->proxy->raw-upstream: violation ${name}`, async () => {
    const id = tid();
    const c = await openWs(`${proxy.url}/viol/${name}?id=${id}`, { perMessageDeflate: true });
    c.ws.send('go');
    const closed = await c.expectClosed();
    check('close code seen by the node client', closed.code, 1001);
    const ev = await raw.waitEvent(eventFor('result', id), 8000);
    checkTrue('raw upstream reported', ev !== null, raw.events.slice(-3));
    check('violator (raw upstream) receives', [ev.ended, ev.close_code], ['close', 1002]);
    checkTrue('close reason names the violation (non-empty)', ev.reason !== '', ev.reason);
    return `reason ${JSON.stringify(ev.reason)}`;
  }, 20000]);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function httpGet(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: 10000 }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

function pythonHasWebsockets() {
  try {
    execFileSync(PYTHON, ['-c', 'import websockets'], { stdio: 'ignore', timeout: 20000 });
    return true;
  } catch (e) {
    return false;
  }
}

async function main() {
  const bin = argValue('--bin') || process.env.WSCHAOS_BIN;
  const filter = argValue('--filter') || '';
  const budget = parseFloat(argValue('--budget') || process.env.INTEROP_BUDGET || '80');
  const r = new L.Runner('node', budget * 1000);
  if (!bin || !fs.existsSync(bin)) {
    r.fail('proxy binary', `not found: ${bin} (use --bin or WSCHAOS_BIN)`);
    r.summary();
    return 1;
  }

  const nodeUp = new L.Proc([process.execPath, path.join(HERE, 'upstream.js')], 'node-upstream-js');
  const pyOk = fs.existsSync(PYTHON) && pythonHasWebsockets();
  const pyUp = pyOk ? new L.Proc([PYTHON, path.join(ROOT, 'py', 'upstream.py')], 'py-upstream-js') : null;
  const rawUp = fs.existsSync(PYTHON) ? new L.Proc([PYTHON, path.join(ROOT, 'py', 'rawupstream.py')], 'raw-upstream-js') : null;
  const proxies = [];
  const start = async (upstream, name) => {
    const p = new L.Proxy(bin, upstream, name);
    proxies.push(p);
    return p.start();
  };

  try {
    const nodePort = await nodeUp.waitListening();
    const targets = [];
    const pxNode = await start(`ws://127.0.0.1:${nodePort}`, 'proxy-node-main-js');
    targets.push({ name: 'node', proc: nodeUp, proxy: pxNode, upPort: nodePort, url: (p) => pxNode.url + p });
    if (pyUp) {
      const pyPort = await pyUp.waitListening();
      const pxPy = await start(`ws://127.0.0.1:${pyPort}`, 'proxy-py-main-js');
      targets.push({ name: 'py', proc: pyUp, proxy: pxPy, upPort: pyPort, url: (p) => pxPy.url + p });
    }

    const tests = [];
    for (const t of targets) tests.push(...libraryTests(t));

    const missing = (what) => async () => {
      const msg = `${what} missing (${PYTHON} with python3-websockets)`;
      if (CI) throw new Fail(msg);
      throw new Skip(msg);
    };
    if (!pyUp) tests.push(['node-client->proxy->py-upstream: all tests', missing('python websockets'), 5000]);

    tests.push(['node-client->proxy->(nothing listening): upstream down', async () => {
      const port = await freePort();
      const p = await start(`ws://127.0.0.1:${port}`, 'proxy-down-js');
      await expectHttpStatus(`${p.url}/echo`, 502);
    }, 20000]);

    for (const t of targets) tests.push([`node-client->proxy->${t.name}-upstream: graceful shutdown on SIGTERM (40 rounds)`, async () => {
      // Repeated: shutdown races only show now and then.
      const rounds = 40;
      const outcomes = {};
      let firstBad = null;
      for (let n = 0; n < rounds; n += 1) {
        const p = await start(`ws://127.0.0.1:${t.upPort}`, `proxy-sigterm-js-${t.name}-${n}`);
        const id = tid();
        const c = await openWs(`${p.url}/echo?id=${id}`);
        c.ws.send('before shutdown');
        check('echo', await c.nextText(), 'before shutdown');
        p.terminate();
        const closed = await c.expectClosed();
        const ev = await t.proc.waitEvent(eventFor('closed', id));
        const ex = await p.waitExit(15000);
        const key = `client ${closed.code}, upstream ${ev && ev.code}, exit ${ex && ex.code}${ex && ex.signal ? ` (signal ${ex.signal})` : ''}`;
        outcomes[key] = (outcomes[key] || 0) + 1;
        if (key !== 'client 1001, upstream 1001, exit 0' && !firstBad) firstBad = `round ${n + 1}: ${key} (proxy log ${p.logPath})`;
      }
      if (firstBad) {
        throw new Fail(`close codes and proxy exit code over ${rounds} rounds: got ${JSON.stringify(outcomes)}, want all 'client 1001, upstream 1001, exit 0'; first bad ${firstBad}`);
      }
      return `${rounds} rounds`;
    }, 60000]);

    tests.push(['http-client->proxy->node-upstream: plain GET', async () => {
      const got = await httpGet(`http://127.0.0.1:${pxNode.port}/some/page?x=1`);
      check('HTTP status', got.status, 200);
      check('HTTP body', got.body, 'node upstream http: GET /some/page?x=1\n');
    }, 20000]);

    if (rawUp) {
      const rawPort = await rawUp.waitListening();
      const pxRaw = await start(`ws://127.0.0.1:${rawPort}`, 'proxy-raw-main-js');

      tests.push(['node-client->proxy->raw-upstream: upstream RST mid-session', async () => {
        const id = tid();
        const c = await openWs(`${pxRaw.url}/rst?id=${id}`);
        c.ws.send('hello');
        const closed = await c.expectClosed();
        check('close code seen by the client', closed.code, 1006);
        const ev = await rawUp.waitEvent(eventFor('rst', id));
        check("raw upstream got the client's frame before resetting", ev && ev.got_frame, 1);
      }, 20000]);

      tests.push(['node-client->proxy->raw-upstream: fragmented message with a ping between fragments, server to client', async () => {
        const id = tid();
        const c = await openWs(`${pxRaw.url}/fragsend?id=${id}`);
        const pings = [];
        c.ws.on('ping', (d) => pings.push(Buffer.from(d)));
        c.ws.send('go');
        check('fragmented message from the upstream', await c.nextText(), 'abcdef');
        check('pings received by the client', pings, [Buffer.from('raw-ping')]);
        const ev = await rawUp.waitEvent(eventFor('fragsend', id));
        check('pong seen by the raw upstream (payload, masked)', ev && [ev.pong, ev.pong_masked],
          [Buffer.from('raw-ping').toString('hex'), true]);
        const closed = await c.close(1000);
        check('close code', closed && closed.code, 1000);
      }, 20000]);

      tests.push(...rawUpstreamViolationTests(rawUp, pxRaw, [
        'masked-server-frame', 'fragmented-control', 'control-126-bytes', 'reserved-data-opcode',
        'reserved-control-opcode', 'rsv1-without-extension', 'rsv2-without-extension',
        'rsv3-without-extension', 'continuation-without-start',
      ]));
    } else {
      tests.push(['node-client->proxy->raw-upstream: all tests', missing('python'), 5000]);
    }

    for (const [name, fn, timeoutMs] of tests) {
      if (filter && !name.includes(filter)) continue;
      await r.run(name, fn, timeoutMs);
    }
  } catch (e) {
    r.fail('suite setup', `${e && e.name}: ${e && e.message}`);
  } finally {
    await Promise.all(proxies.map((p) => p.stop()));
    await Promise.all([nodeUp, pyUp, rawUp].filter(Boolean).map((p) => p.stop()));
    L.killChildren();
  }
  return L.finish(r);
}

L.runSuite('node', main);
