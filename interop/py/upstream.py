"""Upstream WebSocket server built on Python's `websockets` library.

Behaviour is chosen by the last segment of the request path:

  echo      echoes every message (text stays text, binary stays binary)
  frames    after each message, sends a JSON list of the frames received
            for it (opcode, fin, rsv1, payload hex), control frames included
  close     on the first message, closes with ?code=&reason=
  pathinfo  sends the request path+query it received, then echoes
  serverping on the first message, pings the client with ?data= and, once
            the pong arrives, reports it and sends "pong-received"
  forbidden answers the upgrade with HTTP 403
  (other)   echoes

Pings are answered by the library; each ping is reported, and ?pongdelay=MS
delays the answer. A request without Upgrade gets a plain HTTP 200 whose body
names the request. Subprotocol "b" is chosen when offered; permessage-deflate
is accepted when offered.

Events are JSON lines on stdout; the first is {"event": "listening",
"port": N}. Exits on stdin EOF or after --lifetime seconds.
"""

import argparse
import asyncio
import http
import json

from upstream_kit import emit, last_segment, query, run, serve_until_eof

import websockets
import websockets.exceptions
from websockets.legacy.server import WebSocketServerProtocol


class RecordingProtocol(WebSocketServerProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.frame_log = []
        self.control_log = []

    async def read_frame(self, max_size):
        frame = await super().read_frame(max_size)
        if int(frame.opcode) >= 8:
            self.control_log.append((int(frame.opcode), bytes(frame.data)))
        self.frame_log.append({
            "op": int(frame.opcode),
            "fin": bool(frame.fin),
            "rsv1": bool(frame.rsv1),
            "data": bytes(frame.data).hex() if len(frame.data) <= 1024 else "len:%d" % len(frame.data),
        })
        return frame

    async def pong(self, data=b""):
        # Called by the library to answer each received ping.
        emit(event="ping", path=self.path, data=bytes(data).hex())
        delay = query(self.path).get("pongdelay")
        if delay:
            await asyncio.sleep(int(delay) / 1000.0)
        await super().pong(data)


def process_request(path, headers):
    if "websocket" not in headers.get("Upgrade", "").lower():
        body = ("python upstream http: GET %s\n" % path).encode()
        return http.HTTPStatus.OK, [("Content-Type", "text/plain")], body
    if last_segment(path) == "forbidden":
        return http.HTTPStatus.FORBIDDEN, [("Content-Type", "text/plain")], b"forbidden\n"
    return None


async def handler(ws):
    path = ws.path
    emit(
        event="open",
        path=path,
        protocols=[p.strip() for p in ",".join(ws.request_headers.get_all("Sec-WebSocket-Protocol")).split(",") if p.strip()],
        protocol=ws.subprotocol,
        extensions_offered=", ".join(ws.request_headers.get_all("Sec-WebSocket-Extensions")),
        extensions=[e.name for e in ws.extensions],
    )
    seg = last_segment(path)
    try:
        if seg == "frames":
            async for _msg in ws:
                log, ws.frame_log = ws.frame_log, []
                await ws.send(json.dumps(log))
        elif seg == "serverping":
            data = query(path).get("data", "").encode()
            await ws.recv()
            waiter = await ws.ping(data)
            await asyncio.wait_for(waiter, 5)
            await asyncio.sleep(0.2)  # a second (unexpected) pong would show in count
            pongs = [d for op, d in ws.control_log if op == 0xA]
            emit(event="pong", path=path, data=pongs[0].hex() if pongs else None, count=len(pongs))
            await ws.send("pong-received")
            async for msg in ws:
                await ws.send(msg)
        elif seg == "close":
            q = query(path)
            await ws.recv()
            await ws.close(int(q.get("code", "1000")), q.get("reason", ""))
        else:
            if seg == "pathinfo":
                await ws.send(path)
            async for msg in ws:
                await ws.send(msg)
    except websockets.exceptions.ConnectionClosed:
        pass
    finally:
        await ws.wait_closed()
        emit(event="closed", path=path, code=ws.close_code, reason=ws.close_reason)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lifetime", type=float, default=600)
    args = ap.parse_args()

    server = await websockets.serve(
        handler,
        "127.0.0.1",
        0,
        create_protocol=RecordingProtocol,
        process_request=process_request,
        subprotocols=["b"],
        compression="deflate",
        max_size=64 << 20,
        max_queue=64,
        ping_interval=None,
        close_timeout=3,
    )
    port = server.sockets[0].getsockname()[1]
    emit(event="listening", port=port)

    await serve_until_eof(server, args.lifetime)


if __name__ == "__main__":
    run(main)
