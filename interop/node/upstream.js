'use strict';
// Upstream WebSocket server built on the `ws` package.
//
// Behaviour is chosen by the last segment of the request path:
//   echo      echoes every message (text stays text, binary stays binary)
//   close     on the first message, closes with ?code=&reason=
//   pathinfo  sends the request path+query it received, then echoes
//   serverping on the first message, pings the client with ?data= and, once
//             the pong arrives, reports it and sends "pong-received"
//   forbidden answers the upgrade with HTTP 403
//   (other)   echoes
// Pings are answered by this server (not automatically), each one reported;
// ?pongdelay=MS delays the answer. A request without Upgrade gets a plain
// HTTP 200 whose body names the request. Subprotocol "b" is chosen when
// offered; permessage-deflate is accepted when offered.
//
// Events are JSON lines on stdout; the first is {"event":"listening","port":N}.
// Exits on stdin EOF or after --lifetime seconds (default 600).

const http = require('http');
const { WebSocketServer } = require('ws');
const { emit, serve } = require('./upstream_kit');

function lastSegment(url) {
  const u = new URL(url, 'http://x');
  const segs = u.pathname.split('/').filter(Boolean);
  return segs.length ? segs[segs.length - 1] : '';
}

function queryParam(url, name) {
  return new URL(url, 'http://x').searchParams.get(name);
}

const server = http.createServer((req, res) => {
  const body = `node upstream http: ${req.method} ${req.url}\n`;
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
});

const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: true,
  maxPayload: 64 << 20,
  autoPong: false,
  handleProtocols: (protocols) => (protocols.has('b') ? 'b' : false),
});

server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => {});
  if (lastSegment(req.url) === 'forbidden') {
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\nforbidden\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, req));
});

function onConnection(ws, req) {
  const path = req.url;
  const offered = (req.headers['sec-websocket-protocol'] || '')
    .split(',').map((s) => s.trim()).filter(Boolean);
  emit({
    event: 'open',
    path,
    protocols: offered,
    protocol: ws.protocol || null,
    extensions_offered: req.headers['sec-websocket-extensions'] || '',
    extensions: ws.extensions ? ws.extensions.split(',').filter(Boolean) : [],
  });
  const seg = lastSegment(path);
  const delay = parseInt(queryParam(path, 'pongdelay') || '0', 10);

  ws.on('error', () => {});
  ws.on('ping', (data) => {
    emit({ event: 'ping', path, data: Buffer.from(data).toString('hex') });
    const answer = () => {
      try { ws.pong(data); } catch (e) { /* connection already gone */ }
    };
    if (delay > 0) setTimeout(answer, delay); else answer();
  });
  ws.on('close', (code, reason) => {
    emit({ event: 'closed', path, code, reason: reason.toString() });
  });

  if (seg === 'close') {
    ws.once('message', () => {
      ws.close(parseInt(queryParam(path, 'code') || '1000', 10), queryParam(path, 'reason') || '');
    });
    return;
  }
  if (seg === 'serverping') {
    const data = Buffer.from(queryParam(path, 'data') || '', 'utf8');
    const pongs = [];
    ws.on('pong', (d) => {
      pongs.push(Buffer.from(d));
      if (pongs.length > 1) return;
      // A second (unexpected) pong would show in count.
      setTimeout(() => {
        emit({ event: 'pong', path, data: pongs[0].toString('hex'), count: pongs.length });
        try { ws.send('pong-received'); } catch (e) { /* closed */ }
      }, 200);
    });
    ws.once('message', () => {
      ws.ping(data);
      ws.on('message', (d, isBinary) => ws.send(d, { binary: isBinary }));
    });
    return;
  }
  if (seg === 'pathinfo') ws.send(path);
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
}

serve(server, wss);
