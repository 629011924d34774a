'use strict';
// Rules tests with node's `ws` package as the client.
//
// Usage: node interop/node/rules_suite.js --bin /tmp/wschaos [--filter TEXT]
//
// Every test starts its own proxy with a rules file written for it, in front
// of the built-in echo server or of interop/node/rules_upstream.js (which
// reports every message, ping and close it sees), and asserts what the client
// and the upstream observe.

const path = require('path');
const L = require('./lib');
const K = require('./rules_kit');

const { Fail, check, checkTrue, eventFor, sleep, Runner } = L;
const { Sess, HttpReject, mono, fmt, checkBetween, faults, waitFaults } = K;

const LABEL = 'node-rules';
let ids = 0;
const tid = () => { ids += 1; return `nr${ids}`; };

function upMsgs(up, id) {
  return up.events.filter(eventFor('message', id)).map((e) => e.data);
}

async function upClosed(up, id, timeoutMs = 5000) {
  const ev = await up.waitEvent(eventFor('closed', id), timeoutMs);
  if (!ev) throw new Fail(`upstream: no close reported for session ${id} within ${timeoutMs}ms`);
  return ev;
}

const closeOf = (s) => s.closeInfo && [s.closeInfo.code, s.closeInfo.reason];

const CLOSE_CASES = [
  // key, code as written, code observed, reason
  ['1001', 1001, 1001, 'going away for now'],
  ['1012', 1012, 1012, 'service restart'],
  ['service_restart', 'service_restart', 1012, 'restarting'],
  ['try_again_later', 'try_again_later', 1013, 'try again later'],
  ['bad_gateway', 'bad_gateway', 1014, 'bad gateway'],
  ['timeout', 'timeout', 3008, 'timed out'],
  ['4000', 4000, 4000, 'custom ✓ reason'],
  ['none', 'none', 1005, ''],
];

function actionTests(env) {
  const tests = [];
  const { P, up, upUrl } = env;
  const add = (name, fn, timeoutMs = 20000) => tests.push([`${LABEL}: ${name}`, fn, timeoutMs]);

  let codesProxy = null;
  const getCodesProxy = async () => {
    if (!codesProxy) {
      codesProxy = await P.start('proxy-codes-js', CLOSE_CASES.map(([key, code, , reason]) => ({
        name: `code-${key}`, match: { path: `/code/${key}` }, after_messages: 1, direction: 'client',
        action: 'close', code, ...(reason ? { reason } : {}),
      })), { upstream: upUrl });
    }
    return codesProxy;
  };
  for (const [key, code, wantCode, wantReason] of CLOSE_CASES) {
    add(`action close code = ${JSON.stringify(code)}: client sees ${wantCode} ${JSON.stringify(wantReason)}`, async () => {
      const p = await getCodesProxy();
      const id = tid();
      const s = await Sess.open(`${p.url}/code/${key}?id=${id}`);
      s.ws.send('hello');
      await s.waitEnd();
      check('close code and reason seen by the client', closeOf(s), [wantCode, wantReason]);
      check('errors seen by the client', s.errors, []);
      const ev = await upClosed(up, id);
      check('messages the upstream received', upMsgs(up, id), ['hello']);
      check('close code seen by the upstream (the side not chosen)', ev.code, 1001);
      check('fault fired log lines (code, reason, action, trigger)',
        (await waitFaults(p, `code-${key}`)).map((f) => [f.code, f.reason, f.action, f.trigger]),
        [[wantCode, wantReason, 'close', 'after_messages']]);
    });
  }

  let killProxy = null;
  const getKillProxy = async () => {
    if (!killProxy) {
      killProxy = await P.start('proxy-kill-js', [
        { name: 'reset', match: { path: '/reset' }, after_messages: 1, direction: 'client', action: 'reset' },
        { name: 'drop', match: { path: '/drop' }, after_messages: 1, direction: 'client', action: 'drop' },
      ], { upstream: upUrl });
    }
    return killProxy;
  };
  for (const [action, want] of [['reset', { socketErrors: ['ECONNRESET'], socketEnd: false }], ['drop', { socketErrors: [], socketEnd: true }]]) {
    add(`action ${action}: client sees 1006 (${action === 'reset' ? 'ECONNRESET' : 'clean EOF, no error'})`, async () => {
      const p = await getKillProxy();
      const id = tid();
      const s = await Sess.open(`${p.url}/${action}?id=${id}`);
      s.ws.send('hello');
      await s.waitEnd();
      check('close code seen by the client', s.closeInfo.code, 1006);
      check('TCP socket of the client: error codes and clean EOF', { socketErrors: s.socketErrors, socketEnd: s.socketEnd }, want);
      const ev = await upClosed(up, id);
      check('messages the upstream received', upMsgs(up, id), ['hello']);
      check('close code seen by the upstream', ev.code, 1001);
      return action === 'reset' ? `socket error ${s.socketErrors.join(', ')}` : 'socket end without error';
    });
  }

  add('action reject on connect: 503 with Retry-After and body; 429; 403 on an offered subprotocol; upstream never dialed', async () => {
    const p = await P.start('proxy-reject-js', [
      { name: 'reject-503', match: { path: '/reject' }, on: 'connect', action: 'reject', status: 503, retry_after: 7, body: 'try again later' },
      { name: 'reject-429', match: { path: '/slow' }, on: 'connect', action: 'reject', status: 429, body: 'slow down' },
      { name: 'reject-proto', match: { path: '/proto', subprotocol: 'graphql-*' }, on: 'connect', action: 'reject', status: 403, body: 'no graphql' },
    ], { upstream: upUrl });
    const refused = async (p2, want, opts) => {
      try {
        const s = await Sess.open(p2, opts);
        await s.terminate();
        throw new Fail(`HTTP status: got 101 (connection opened), want ${want}`);
      } catch (e) {
        if (!(e instanceof HttpReject)) throw e;
        return e;
      }
    };
    const id1 = tid();
    const e1 = await refused(`${p.url}/reject?id=${id1}`, 503);
    check('HTTP status, Retry-After and body', [e1.status, e1.headers['retry-after'], e1.body], [503, '7', 'try again later']);
    const id2 = tid();
    const e2 = await refused(`${p.url}/slow?id=${id2}`, 429);
    check('HTTP status, Retry-After and body (status = 429, no retry_after)',
      [e2.status, e2.headers['retry-after'] === undefined ? null : e2.headers['retry-after'], e2.body], [429, null, 'slow down']);
    const id3 = tid();
    const e3 = await refused(`${p.url}/proto?id=${id3}`, 403, { protocols: ['chat', 'graphql-ws'] });
    check('HTTP status and body, reject matched on an offered subprotocol', [e3.status, e3.body], [403, 'no graphql']);
    const ok = await Sess.open(`${p.url}/proto?id=${tid()}`, { protocols: ['chat', 'b'] });
    await ok.echo('not rejected');
    await ok.close();
    await sleep(200);
    check('upstream opens for rejected upgrades (never dialed)',
      up.events.filter((e) => [id1, id2, id3].some((x) => eventFor('open', x)(e))), []);
  });

  add('action hang: pings every 100ms, no pong within 500ms, TCP stays open', async () => {
    const p = await P.start('proxy-hang-js', [{ name: 'hang', after: '300ms', action: 'hang' }], { upstream: upUrl });
    const id = tid();
    const s = await Sess.open(`${p.url}/echo?id=${id}`);
    try {
      const sent = []; // {t, data}
      let detected = null;
      for (let n = 0; n < 40 && !detected && !s.isEnded; n += 1) { // at most 4 s of pinging
        const data = `p${n}`;
        sent.push({ t: mono(), data });
        s.ws.ping(data);
        await sleep(100);
        const now = mono();
        const answered = new Set(s.pongs.map((x) => x.data));
        const late = sent.find((x) => !answered.has(x.data) && now - x.t >= 500);
        if (late) detected = { t: late.t, at: now };
      }
      checkTrue('a ping left unanswered for 500ms (client pings every 100ms)', detected !== null,
        `all ${sent.length} pings answered; session ${s.outcome()}`);
      checkTrue('pongs arrived before the hang (300ms after open)', s.pongs.length >= 1, s.pongs);
      const firstLate = detected.t - s.opened;
      checkBetween('first unanswered ping, after open', firstLate, 200, 600);
      check('connection open when the missing pong was detected', [s.isEnded, s.ws.readyState], [false, 1]);
      s.ws.send('after the hang');
      await s.staysOpen(800);
      check('messages echoed during the hang', s.texts(), []);
      const pingsUp = up.events.filter(eventFor('ping', id));
      check('pings seen by the upstream == pongs seen by the client', pingsUp.length, s.pongs.length);
      check('messages the upstream received during the hang', upMsgs(up, id), []);
      return `${s.pongs.length} pings answered, first unanswered ${fmt(firstLate)} after open`;
    } finally {
      await s.terminate();
    }
  });

  add('action hang with duration = 500ms: the client is reset after that long', async () => {
    const p = await P.start('proxy-hang-duration-js', [
      { name: 'hang-then-reset', after: '200ms', action: 'hang', duration: '500ms' },
    ], { upstream: upUrl });
    const s = await Sess.open(`${p.url}/echo?id=${tid()}`);
    await s.waitEnd(3000);
    check('close code and socket error codes seen by the client', [s.closeInfo.code, s.socketErrors], [1006, ['ECONNRESET']]);
    checkBetween('end after connect (after 200ms + duration 500ms)', s.closeInfo.mono - s.started, 700, 1100);
    return `reset ${fmt(s.closeInfo.mono - s.started)} after connect`;
  });

  add('action hang direction = "client": client messages stop, upstream messages still flow', async () => {
    const p = await P.start('proxy-hang-client-js', [
      { name: 'hang-client', after: '300ms', action: 'hang', direction: 'client' },
    ], { upstream: upUrl });
    const id = tid();
    const s = await Sess.open(`${p.url}/hang/ticker?every=100&ticks=30&id=${id}`);
    try {
      await s.echo('before the hang');
      const wait = s.opened + 400 - mono();
      if (wait > 0) await sleep(wait);
      const mark = s.msgs.length;
      s.ws.send('during the hang');
      await s.staysOpen(600);
      const later = s.msgs.slice(mark).map((m) => ({ d: JSON.parse(m.data), wall: m.wall }));
      check('client messages echoed during the hang', later.filter((x) => !('tick' in x.d)).map((x) => x.d), []);
      const lags = later.filter((x) => 'tick' in x.d).map((x) => x.wall - x.d.t);
      checkTrue('upstream ticks still arriving during the hang (>= 4, each lag < 150ms)', lags.length >= 4 && Math.max(...lags) < 150, lags.map(fmt));
      check('messages the upstream received', upMsgs(up, id), ['before the hang']);
      return `${lags.length} ticks during the hang`;
    } finally {
      await s.terminate();
    }
  });

  for (const direction of ['client', 'upstream', 'both']) {
    add(`action delay latency = 300ms, direction = ${direction}`, async () => {
      const p = await P.start(`proxy-delay-${direction}-js`, [
        { name: 'slow', match: { path: '/delay/*' }, after: '500ms', action: 'delay', direction, latency: '300ms' },
      ], { upstream: upUrl });
      const id = tid();
      const s = await Sess.open(`${p.url}/delay/ticker?every=100&ticks=30&id=${id}`);
      try {
        const before = [];
        for (let n = 0; n < 3; n += 1) before.push(await s.echo(JSON.stringify({ echo: `before-${n}`, t: Date.now() })));
        checkTrue('echo round trips before the trigger all < 150ms', Math.max(...before) < 150, before.map(fmt));
        const wait = s.opened + 700 - mono();
        if (wait > 0) await sleep(wait);
        const triggerWall = s.openedWall + 500;
        const after = [];
        const sentAfter = [];
        for (let n = 0; n < 3; n += 1) {
          const txt = JSON.stringify({ echo: `after-${n}`, t: Date.now() });
          sentAfter.push(txt);
          after.push(await s.echo(txt));
        }
        const [lo, hi] = { client: [300, 550], upstream: [300, 550], both: [600, 900] }[direction];
        checkTrue(`echo round trips after the trigger all in [${lo}ms, ${hi}ms]`, after.every((x) => x >= lo && x <= hi), after.map(fmt));
        const ticks = s.msgs.map((m) => ({ d: JSON.parse(m.data), wall: m.wall })).filter((x) => 'tick' in x.d);
        const order = ticks.map((x) => x.d.tick);
        check('tick numbers arrive in order', order, [...order].sort((a, b) => a - b));
        const lags = ticks.filter((x) => x.d.t > triggerWall + 50).map((x) => x.wall - x.d.t);
        checkTrue('ticks sent after the trigger received', lags.length >= 3, lags);
        if (direction === 'client') {
          checkTrue('upstream-to-client ticks not delayed: every lag < 150ms', Math.max(...lags) < 150, lags.map(fmt));
        } else {
          checkTrue('upstream-to-client ticks delayed: every lag >= 300ms', Math.min(...lags) >= 300, lags.map(fmt));
        }
        const upLags = up.events.filter((e) => eventFor('message', id)(e) && sentAfter.includes(e.data))
          .map((e) => e.t - JSON.parse(e.data).t);
        check('client messages sent after the trigger that reached the upstream', upLags.length, 3);
        if (direction === 'upstream') {
          checkTrue('client-to-upstream messages not delayed: every lag < 150ms', Math.max(...upLags) < 150, upLags.map(fmt));
        } else {
          checkTrue('client-to-upstream messages delayed: every lag >= 300ms', Math.min(...upLags) >= 300, upLags.map(fmt));
        }
        return `rtt before ${before.map(fmt).join('/')}, after ${after.map(fmt).join('/')}; tick lag ${fmt(Math.min(...lags))}..${fmt(Math.max(...lags))}; upstream lag ${fmt(Math.min(...upLags))}..${fmt(Math.max(...upLags))}`;
      } finally {
        await s.terminate();
      }
    });
  }

  for (const to of ['upstream', 'both']) {
    add(`action close to = "${to}": ${to === 'upstream' ? 'the upstream sees 4000, the client 1001' : 'both sides see 4000 and the reason'}`, async () => {
      const p = await P.start(`proxy-to-${to}-js`, [
        { name: `to-${to}`, after_messages: 1, direction: 'client', action: 'close', code: 4000, reason: `to ${to}`, to },
      ], { upstream: upUrl });
      const id = tid();
      const s = await Sess.open(`${p.url}/echo?id=${id}`);
      s.ws.send('hello');
      await s.waitEnd();
      const ev = await upClosed(up, id);
      if (to === 'upstream') check('close code seen by the client', s.closeInfo.code, 1001);
      else check('close seen by the client', closeOf(s), [4000, `to ${to}`]);
      check('close code and reason seen by the upstream', [ev.code, ev.reason], [4000, `to ${to}`]);
    });
  }
  return tests;
}

function triggerTests(env) {
  const tests = [];
  const { P, up, upUrl } = env;
  const add = (name, fn, timeoutMs = 20000) => tests.push([`${LABEL}: ${name}`, fn, timeoutMs]);

  add('trigger on = "connect": close right after the upgrade', async () => {
    const p = await P.start('proxy-on-connect-js', [
      { name: 'at-connect', on: 'connect', action: 'close', code: 4000, reason: 'on connect' },
    ], { upstream: upUrl });
    const id = tid();
    const s = await Sess.open(`${p.url}/echo?id=${id}`);
    await s.waitEnd(3000);
    check('close seen by the client, without sending anything', closeOf(s), [4000, 'on connect']);
    checkTrue('close within 200ms of connecting', s.closeInfo.mono - s.started < 200, fmt(s.closeInfo.mono - s.started));
    check('messages received', s.texts(), []);
    const ev = await upClosed(up, id);
    check('close code seen by the upstream', ev.code, 1001);
    return `closed ${fmt(s.closeInfo.mono - s.started)} after connecting`;
  });

  add('trigger after = "300ms": the close is not seen before 300ms', async () => {
    const p = await P.start('proxy-after-js', [
      { name: 'after-300', after: '300ms', action: 'close', code: 4000, reason: 'after' },
    ], { upstream: upUrl });
    const s = await Sess.open(`${p.url}/echo?id=${tid()}`);
    const rtt = await s.echo('still open');
    await s.waitEnd(3000);
    check('close seen by the client', closeOf(s), [4000, 'after']);
    checkBetween('close after connect', s.closeInfo.mono - s.started, 300, 700);
    return `echo in ${fmt(rtt)}, closed ${fmt(s.closeInfo.mono - s.started)} after connect`;
  });

  add('trigger after = "200ms..600ms": each session drawn in the range', async () => {
    const p = await P.start('proxy-after-range-js', [
      { name: 'range', after: '200ms..600ms', action: 'close', code: 4000, reason: 'range' },
    ], { upstream: upUrl });
    const ss = await Promise.all(Array.from({ length: 6 }, () => Sess.open(`${p.url}/echo?id=${tid()}`)));
    await Promise.all(ss.map((s) => s.waitEnd(3000)));
    check('closes seen by the 6 clients', ss.map(closeOf), Array(6).fill([4000, 'range']));
    const times = ss.map((s) => s.closeInfo.mono - s.started);
    for (const t of times) checkBetween('close after connect, one of 6 sessions', t, 200, 700);
    checkTrue('the draws differ: spread of the 6 close times >= 50ms', Math.max(...times) - Math.min(...times) >= 50, times.map(fmt));
    return `closed at ${times.sort((a, b) => a - b).map(fmt).join(', ')}`;
  });

  add('trigger after_messages = 3, direction = "client": right after the 3rd client message', async () => {
    const p = await P.start('proxy-after-messages-js', [
      { name: 'third', after_messages: 3, direction: 'client', action: 'close', code: 4000, reason: 'three' },
    ], { upstream: upUrl });
    const id = tid();
    const s = await Sess.open(`${p.url}/echo?id=${id}`);
    await s.echo('m1');
    await s.echo('m2');
    s.ws.send('m3');
    await s.waitEnd();
    check('close seen by the client', closeOf(s), [4000, 'three']);
    const echoes = s.texts();
    checkTrue('echoes received: m1, m2 and maybe m3',
      JSON.stringify(echoes) === '["m1","m2"]' || JSON.stringify(echoes) === '["m1","m2","m3"]', echoes);
    await upClosed(up, id);
    check('messages the upstream received', upMsgs(up, id), ['m1', 'm2', 'm3']);
    return `echoes ${JSON.stringify(echoes)}`;
  });

  add('trigger after_messages = 3 counts whole messages: 3 fragments and 2 pings are not 5 messages', async () => {
    const p = await P.start('proxy-after-messages-frag-js', [
      { name: 'third', after_messages: 3, direction: 'client', action: 'close', code: 4000, reason: 'three' },
    ], { upstream: upUrl });
    const id = tid();
    const s = await Sess.open(`${p.url}/echo?id=${id}`);
    s.ws.send('frag-1 ', { fin: false });
    s.ws.ping('between');
    s.ws.send('frag-2 ', { fin: false });
    s.ws.ping('between again');
    s.ws.send('frag-3', { fin: true });
    await s.waitMsg((d) => d === 'frag-1 frag-2 frag-3');
    await s.echo('m2');
    s.ws.send('m3');
    await s.waitEnd();
    check('close seen by the client', closeOf(s), [4000, 'three']);
    check('pongs received for the pings between fragments', s.pongs.map((x) => x.data), ['between', 'between again']);
    await upClosed(up, id);
    check('messages the upstream received', upMsgs(up, id), ['frag-1 frag-2 frag-3', 'm2', 'm3']);
  });

  add('trigger after_bytes = "1KiB": after the client message that crosses 1024 bytes', async () => {
    const p = await P.start('proxy-after-bytes-js', [
      { name: 'kib', after_bytes: '1KiB', direction: 'client', action: 'close', code: 4000, reason: '1KiB' },
    ], { upstream: upUrl });
    const id = tid();
    const s = await Sess.open(`${p.url}/echo?id=${id}`);
    const chunks = [0, 1, 2].map((n) => Buffer.alloc(400, 0x41 + n));
    for (const c of chunks.slice(0, 2)) {
      s.ws.send(c);
      await s.waitMsg((d) => Buffer.isBuffer(d) && d.equals(c));
    }
    s.ws.send(chunks[2]); // 1200 bytes in all: crosses 1024
    await s.waitEnd();
    check('close seen by the client', closeOf(s), [4000, '1KiB']);
    await upClosed(up, id);
    check('sizes of the messages the upstream received', up.events.filter(eventFor('message', id)).map((e) => e.len), [400, 400, 400]);
  });

  add('trigger on_message = "crash": the message is not delivered, the session is closed', async () => {
    const p = await P.start('proxy-on-message-js', [
      { name: 'poison', on_message: 'crash', direction: 'client', action: 'close', code: 1011, reason: 'internal error' },
    ], { upstream: upUrl });
    const id = tid();
    const s = await Sess.open(`${p.url}/echo?id=${id}`);
    await s.echo('hello');
    s.ws.send('please crash now');
    await s.waitEnd();
    check('close seen by the client', closeOf(s), [1011, 'internal error']);
    check('messages received by the client', s.texts(), ['hello']);
    const ev = await upClosed(up, id);
    check('messages the upstream received (the matching one is not delivered)', upMsgs(up, id), ['hello']);
    check('close code seen by the upstream', ev.code, 1001);
  });

  // Sends parts as one fragmented client message with a ping after the first
  // fragment (and then the message `then`, once the first is echoed);
  // resolves once the session ended or 1s passed.
  const fragmented = async (parts, pingData, rules, then) => {
    const p = await P.start('proxy-fragments-js', rules, { upstream: upUrl });
    const id = tid();
    const s = await Sess.open(`${p.url}/echo?id=${id}`);
    parts.forEach((x, n) => {
      s.ws.send(x, { fin: n === parts.length - 1 });
      if (n === 0) s.ws.ping(pingData);
    });
    if (then !== undefined) {
      try {
        await s.waitMsg((d) => d === parts.join(''), 2000);
        s.ws.send(then);
      } catch (e) {
        if (!(e instanceof Fail)) throw e; // ended or no echo: what was seen is checked by the caller
      }
    }
    await Promise.race([s.ended, sleep(1000)]);
    await sleep(100);
    return { s, id };
  };
  const poison = { name: 'poison', on_message: 'crash', direction: 'client', action: 'close', code: 4000, reason: 'poison' };
  const pingsUp = (id) => up.events.filter(eventFor('ping', id)).map((e) => Buffer.from(e.data, 'hex').toString());
  const seen = (s, id) => ({
    client: s.isEnded ? closeOf(s) : 'open', echoes: s.texts(), 'upstream messages': upMsgs(up, id), 'upstream pings': pingsUp(id),
  });

  add('trigger on_message = "crash" on a fragmented message "cr"+"ash" with a ping between its fragments: not delivered, closed; the ping relayed', async () => {
    const { s, id } = await fragmented(['cr', 'ash'], 'mid', [poison]);
    try {
      check("fragments 'cr' + 'ash' with ping 'mid' between: what client and upstream saw", seen(s, id),
        { client: [4000, 'poison'], echoes: [], 'upstream messages': [], 'upstream pings': ['mid'] });
    } finally {
      await s.terminate();
    }
  });

  add('trigger on_message = "crash" looks at the message, not at a ping between its fragments: "he"+"llo" with ping "crash" is delivered', async () => {
    const { s, id } = await fragmented(['he', 'llo'], 'crash', [poison]);
    try {
      check("fragments 'he' + 'llo' with ping 'crash' between: what client and upstream saw", seen(s, id),
        { client: 'open', echoes: ['hello'], 'upstream messages': ['hello'], 'upstream pings': ['crash'] });
    } finally {
      await s.terminate();
    }
  });

  add('trigger after_messages = 2 beside an on_message rule: a ping between fragments is not a message', async () => {
    const two = { name: 'two', after_messages: 2, direction: 'client', action: 'close', code: 4001, reason: 'two' };
    const { s, id } = await fragmented(['ab', 'cd'], 'mid', [poison, two], 'next');
    try {
      await s.waitEnd(2000);
      check("after_messages = 2 beside an on_message rule; 'ab'+'cd' with a ping between, then 'next'",
        { client: closeOf(s), 'upstream messages': upMsgs(up, id) }, { client: [4001, 'two'], 'upstream messages': ['abcd', 'next'] });
    } finally {
      await s.terminate();
    }
  });

  add('trigger every = "500ms": every open session gets the close at the same tick', async () => {
    const p = await P.start('proxy-every-js', [
      { name: 'tick', every: '500ms', action: 'close', code: 1012, reason: 'rolling restart' },
    ], { upstream: upUrl });
    const probe = await Sess.open(`${p.url}/echo?id=${tid()}`);
    await probe.waitEnd(2000);
    check('close seen by the probe session', closeOf(probe), [1012, 'rolling restart']);
    const tick1 = probe.closeInfo.mono;
    const ss = await Promise.all(Array.from({ length: 4 }, () => Sess.open(`${p.url}/echo?id=${tid()}`)));
    const openedLate = Math.max(...ss.map((s) => s.opened)) - tick1;
    await Promise.all(ss.map((s) => s.waitEnd(2000)));
    check('closes seen by the 4 sessions opened after the probe\'s tick', ss.map(closeOf), Array(4).fill([1012, 'rolling restart']));
    const closes = ss.map((s) => s.closeInfo.mono);
    checkTrue('the 4 closes at the same tick: spread < 100ms', Math.max(...closes) - Math.min(...closes) < 100, closes.map((c) => fmt(c - tick1)));
    checkBetween("the 4 sessions' tick after the probe's tick", Math.min(...closes) - tick1, 400, 600);
    const ticked = await p.waitLog((e) => e.msg === 'clock ticked', 2);
    check('sessions per tick in the proxy log', ticked.map((e) => e.sessions).slice(0, 2), [1, 4]);
    return `all 4 opened within ${fmt(openedLate)} of the tick, closed ${fmt(Math.min(...closes) - tick1)}..${fmt(Math.max(...closes) - tick1)} later`;
  });

  add('probability = 0 never fires, probability = 1 always (5 sessions each)', async () => {
    const p = await P.start('proxy-probability-js', [
      { name: 'never', match: { path: '/never' }, on: 'connect', probability: 0, action: 'close', code: 4000, reason: 'never' },
      { name: 'always', match: { path: '/always' }, on: 'connect', probability: 1, action: 'close', code: 4001, reason: 'always' },
    ], { upstream: upUrl });
    const never = await Promise.all(Array.from({ length: 5 }, () => Sess.open(`${p.url}/never?id=${tid()}`)));
    const always = await Promise.all(Array.from({ length: 5 }, () => Sess.open(`${p.url}/always?id=${tid()}`)));
    try {
      await Promise.all(always.map((s) => s.waitEnd(3000)));
      check('closes seen with probability = 1', always.map(closeOf), Array(5).fill([4001, 'always']));
      await sleep(300);
      check('sessions ended with probability = 0', never.filter((s) => s.isEnded).map((s) => s.outcome()), []);
      for (const [n, s] of never.entries()) await s.echo(`still here ${n}`);
    } finally {
      await Promise.all(never.map((s) => s.close()));
    }
    const alwaysLines = await waitFaults(p, 'always', 5);
    check('fault fired lines per rule', [faults(p, 'never').length, alwaysLines.length], [0, 5]);
  });

  add('limit = 2: only the first two of five sessions are hit', async () => {
    const p = await P.start('proxy-limit-js', [
      { name: 'twice', on: 'connect', limit: 2, action: 'close', code: 4000, reason: 'limited' },
    ], { upstream: upUrl });
    const got = [];
    for (let n = 0; n < 5; n += 1) {
      const s = await Sess.open(`${p.url}/echo?id=${tid()}`);
      got.push(await hitOrEcho(s));
      await s.close();
    }
    check('sessions 1-5 in order', got, [[4000, 'limited'], [4000, 'limited'], 'echo', 'echo', 'echo']);
  });

  add('match on path, query, header, subprotocol and client: a non-matching session is untouched', async () => {
    const p = await P.start('proxy-match-js', [
      { name: 'm-path', match: { path: '/chat/*' }, on: 'connect', action: 'close', code: 4001, reason: 'path' },
      { name: 'm-query', match: { query: { room: 'a*' } }, on: 'connect', action: 'close', code: 4002, reason: 'query' },
      { name: 'm-header', match: { header: { 'X-Tenant': 'acme' } }, on: 'connect', action: 'close', code: 4003, reason: 'header' },
      { name: 'm-subprotocol', match: { subprotocol: 'graphql-*' }, on: 'connect', action: 'close', code: 4004, reason: 'subprotocol' },
      { name: 'm-client', match: { client: '127.0.0.1', path: '/from-loopback' }, on: 'connect', action: 'close', code: 4005, reason: 'client' },
      { name: 'm-client-other', match: { client: '10.0.0.0/8' }, on: 'connect', action: 'close', code: 4006, reason: 'other network' },
    ], { upstream: 'echo' });
    const cases = [
      ['path /chat/* matches /chat/a/b', '/chat/a/b', {}, [4001, 'path']],
      ['path /chat/* does not match /chatroom', '/chatroom', {}, null],
      ['query room=a* matches room=abc', '/q?room=abc', {}, [4002, 'query']],
      ['query room=a* does not match room=bac', '/q?room=bac', {}, null],
      ['header X-Tenant=acme matches x-tenant: acme', '/h', { headers: { 'x-tenant': 'acme' } }, [4003, 'header']],
      ['header X-Tenant=acme does not match X-Tenant: acme2', '/h', { headers: { 'X-Tenant': 'acme2' } }, null],
      ['subprotocol graphql-* matches graphql-ws', '/s', { protocols: ['graphql-ws'] }, [4004, 'subprotocol']],
      ['subprotocol graphql-* does not match chat', '/s', { protocols: ['chat'] }, null],
      ['client 127.0.0.1 matches a loopback client', '/from-loopback', {}, [4005, 'client']],
      ['client 10.0.0.0/8 does not match a loopback client', '/elsewhere', {}, null],
    ];
    const sessions = [];
    try {
      for (const [what, p2, opts, want] of cases) {
        const sep = p2.includes('?') ? '&' : '?';
        sessions.push([what, await Sess.open(`${p.url}${p2}${sep}id=${tid()}`, opts), want]);
      }
      await sleep(300);
      for (const [what, s, want] of sessions) {
        if (want === null) {
          if (s.isEnded) throw new Fail(`session: ${what}: got ended with ${s.outcome()}, want open, echo ok`);
          await s.echo('untouched');
        } else {
          await s.waitEnd(2000);
          check(`session: ${what}`, closeOf(s), want);
        }
      }
      check('fault fired lines of m-client-other', faults(p, 'm-client-other').length, 0);
    } finally {
      await Promise.all(sessions.map(([, s]) => s.close()));
    }
  });
  return tests;
}

// 'echo' when the session echoes a probe, or the [code, reason] it got.
async function hitOrEcho(s) {
  if (!s.isEnded) s.ws.send('probe');
  try {
    await s.waitMsg((d) => d === 'probe', 2000);
    return 'echo';
  } catch (e) {
    if (!(e instanceof Fail)) throw e;
    await s.waitEnd(2000);
    return closeOf(s);
  }
}

function determinismTests(env) {
  const { P } = env;
  const hits = async (seed, run) => {
    const p = await P.start(`proxy-seed-${seed}-run-${run}-js`, [
      { name: 'coin', on: 'connect', probability: 0.5, action: 'close', code: 4000, reason: 'coin' },
    ], { upstream: 'echo', seed });
    const out = [];
    for (let n = 1; n <= 20; n += 1) {
      const s = await Sess.open(`${p.url}/echo?n=${n}`);
      const r = await hitOrEcho(s);
      if (r !== 'echo') {
        if (JSON.stringify(r) !== '[4000,"coin"]') throw new Fail(`seed ${seed} run ${run} session ${n}: got ${JSON.stringify(r)}, want close 4000 "coin" or an echo`);
        out.push(n);
      }
      await s.close();
    }
    await p.stop();
    check(`seed ${seed} run ${run}: hit sessions seen by the client vs fault fired lines`, out.length, faults(p, 'coin').length);
    return out;
  };
  return [[`${LABEL}: determinism: seed = 42, probability = 0.5: same sessions hit in two runs, another seed differs`, async () => {
    const a = await hits(42, 1);
    const b = await hits(42, 2);
    check('sessions hit with seed 42, second run vs first run', b, a);
    checkTrue('seed 42 hits some but not all of 20 sessions', a.length > 0 && a.length < 20, a);
    const c = await hits(7, 1);
    checkTrue('seed 7 hits a different set than seed 42', JSON.stringify(c) !== JSON.stringify(a), `seed 7 ${JSON.stringify(c)}, seed 42 ${JSON.stringify(a)}`);
    return `seed 42: ${JSON.stringify(a)}; seed 7: ${JSON.stringify(c)}`;
  }, 40000]];
}

function reloadTests(env) {
  const { P } = env;
  const rule = [{ name: 'restart', after: '300ms', action: 'close', code: 1012, reason: 'reloaded' }];
  const mk = (how) => async () => {
    const cfg = K.writeConfig(`reload-${how}-js`, [], 42);
    const p = await P.start(`proxy-reload-${how}-js`, [], { upstream: 'echo', configPath: cfg });
    const s = await Sess.open(`${p.url}/echo?id=${tid()}`);
    try {
      await s.echo('before the reload');
      await sleep(500); // the session is older than the rule's 300ms
      K.replaceFile(cfg, K.configText(rule, 42));
      const sent = mono();
      if (how === 'sighup') p.signal('SIGHUP');
      await s.waitEnd(4000);
      check('close seen by the open session', closeOf(s), [1012, 'reloaded']);
      const lines = await p.waitLog((e) => e.msg === 'rules reloaded');
      checkTrue("a 'rules reloaded' line", lines.length >= 1, lines);
      const whys = lines.map((e) => e.why);
      if (how === 'sighup') {
        checkTrue('a reload with why = SIGHUP', whys.includes('SIGHUP'), whys);
        checkBetween('close after the SIGHUP (300ms from the reload)', s.closeInfo.mono - sent, 300, 550);
      } else {
        check('why of the reload', whys[0], 'file changed');
      }
      const closeWall = s.openedWall + (s.closeInfo.mono - s.opened);
      const lag = closeWall - K.parseTs(lines[0].ts);
      checkTrue('close about 300ms after the reload\'s log line (counted from the reload, not from the session\'s start): 200..600ms', lag >= 200 && lag <= 600, fmt(lag));
      return `closed ${fmt(lag)} after the reload, session age ${fmt(s.closeInfo.mono - s.opened)}`;
    } finally {
      await s.close();
    }
  };
  return [
    [`${LABEL}: live reload on a file change: a new after = 300ms rule closes an open session with 1012`, mk('file'), 20000],
    [`${LABEL}: live reload on SIGHUP: a new after = 300ms rule closes an open session with 1012`, mk('sighup'), 20000],
  ];
}

async function main() {
  const argv = process.argv.slice(2);
  const arg = (name) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : undefined; };
  const bin = arg('--bin');
  const filter = arg('--filter') || '';
  const r = new Runner(LABEL, parseFloat(process.env.INTEROP_BUDGET || '80') * 1000);
  const P = new K.Proxies(bin);
  let up = null;
  try {
    if (!bin) throw new Error('--bin is required');
    up = new L.Proc([process.execPath, path.join(__dirname, 'rules_upstream.js'), '--lifetime', '300'], 'node-rules-upstream');
    const port = await up.waitListening();
    const env = { P, up, upUrl: `ws://127.0.0.1:${port}` };
    const tests = [...actionTests(env), ...triggerTests(env), ...determinismTests(env), ...reloadTests(env)];
    for (const [name, fn, timeoutMs] of tests) {
      if (filter && !name.includes(filter)) continue;
      await r.run(name, fn, timeoutMs);
    }
  } catch (e) {
    r.fail('suite setup', `${e && e.name}: ${e && e.message}`);
  } finally {
    await P.stopAll();
    if (up) await up.stop();
    L.killChildren();
  }
  return L.finish(r);
}

L.runSuite(LABEL, main);
