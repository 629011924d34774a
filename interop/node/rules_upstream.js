'use strict';
// Upstream for the rules tests, built on the `ws` package. It reports
// everything it sees as JSON lines on stdout, the same events as
// interop/py/rules_upstream.py:
//   {"event":"listening","port":N}
//   {"event":"open","path":P,"protocol":S}
//   {"event":"message","path":P,"text":true,"data":"...","len":N,"t":MS}
//       (binary payloads are hex; "t" is the wall clock in milliseconds)
//   {"event":"ping","path":P,"data":HEX,"t":MS}
//   {"event":"closed","path":P,"code":C,"reason":R,"t":MS}
// Every message is echoed. When the last segment of the request path is
// `ticker`, it also sends {"tick":n,"t":MS} every ?every= milliseconds
// (default 100), at most ?ticks= times (default 100).
// Exits on stdin EOF or after --lifetime seconds (default 600).

const http = require('http');
const { WebSocketServer } = require('ws');
const { emit, serve } = require('./upstream_kit');

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'Content-Length': 0 });
  res.end();
});

const wss = new WebSocketServer({
  server,
  perMessageDeflate: false,
  maxPayload: 16 << 20,
  handleProtocols: (protocols) => (protocols.has('b') ? 'b' : false),
});

wss.on('connection', (ws, req) => {
  const path = req.url;
  const u = new URL(path, 'http://x');
  const segs = u.pathname.split('/').filter(Boolean);
  emit({ event: 'open', path, protocol: ws.protocol || null });
  ws.on('error', () => {});
  ws.on('ping', (data) => emit({ event: 'ping', path, data: Buffer.from(data).toString('hex'), t: Date.now() }));
  ws.on('message', (data, isBinary) => {
    const t = Date.now();
    const buf = Buffer.from(data);
    emit({
      event: 'message', path, text: !isBinary,
      data: isBinary ? buf.toString('hex') : buf.toString('utf8'), len: buf.length, t,
    });
    ws.send(data, { binary: isBinary });
  });
  let timer = null;
  if (segs[segs.length - 1] === 'ticker') {
    const every = parseInt(u.searchParams.get('every') || '100', 10);
    const ticks = parseInt(u.searchParams.get('ticks') || '100', 10);
    let n = 0;
    timer = setInterval(() => {
      if (n >= ticks || ws.readyState !== ws.OPEN) { clearInterval(timer); return; }
      ws.send(JSON.stringify({ tick: n, t: Date.now() }));
      n += 1;
    }, every);
  }
  ws.on('close', (code, reason) => {
    if (timer) clearInterval(timer);
    emit({ event: 'closed', path, code, reason: reason.toString(), t: Date.now() });
  });
});

serve(server, wss);
