"""Upstream for the rules tests, built on Python's `websockets` library.

It reports everything it sees, as JSON lines on stdout, so that a test can
check what reached the upstream side of the proxy:

  {"event": "listening", "port": N}
  {"event": "open", "path": P, "protocol": S}
  {"event": "message", "path": P, "text": true, "data": "...", "len": N, "t": MS}
      (binary payloads are hex; "t" is the wall clock in milliseconds)
  {"event": "ping", "path": P, "data": HEX, "t": MS}
  {"event": "closed", "path": P, "code": C, "reason": R, "t": MS}

Every message is echoed. When the last segment of the request path is
`ticker`, it also sends {"tick": n, "t": MS} every ?every= milliseconds
(default 100), at most ?ticks= times (default 100), so that the delay of
the upstream-to-client direction can be measured without any client
message.

Exits on stdin EOF or after --lifetime seconds.
"""

import argparse
import asyncio
import json
import time

from upstream_kit import emit, last_segment, query, run, serve_until_eof

import websockets
import websockets.exceptions
from websockets.legacy.server import WebSocketServerProtocol


def now_ms():
    return time.time() * 1000.0


class ReportingProtocol(WebSocketServerProtocol):
    async def pong(self, data=b""):
        # Called by the library to answer each received ping.
        emit(event="ping", path=self.path, data=bytes(data).hex(), t=now_ms())
        await super().pong(data)


async def ticker(ws, every_ms, count):
    for n in range(count):
        await asyncio.sleep(every_ms / 1000.0)
        await ws.send(json.dumps({"tick": n, "t": now_ms()}))


async def handler(ws):
    path = ws.path
    emit(event="open", path=path, protocol=ws.subprotocol)
    tick_task = None
    if last_segment(path) == "ticker":
        q = query(path)
        tick_task = asyncio.ensure_future(ticker(ws, int(q.get("every", "100")), int(q.get("ticks", "100"))))
    try:
        async for msg in ws:
            t = now_ms()
            if isinstance(msg, str):
                emit(event="message", path=path, text=True, data=msg, len=len(msg.encode()), t=t)
            else:
                emit(event="message", path=path, text=False, data=msg.hex(), len=len(msg), t=t)
            await ws.send(msg)
    except websockets.exceptions.ConnectionClosed:
        pass
    finally:
        if tick_task is not None:
            tick_task.cancel()
        await ws.wait_closed()
        emit(event="closed", path=path, code=ws.close_code, reason=ws.close_reason, t=now_ms())


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lifetime", type=float, default=600)
    args = ap.parse_args()

    server = await websockets.serve(
        handler,
        "127.0.0.1",
        0,
        create_protocol=ReportingProtocol,
        subprotocols=["b"],
        compression=None,
        max_size=16 << 20,
        ping_interval=None,
        close_timeout=3,
    )
    emit(event="listening", port=server.sockets[0].getsockname()[1])

    await serve_until_eof(server, args.lifetime)


if __name__ == "__main__":
    run(main)
