"""Helpers for the rules tests: configuration files, proxies started with
them, and a `websockets` client whose messages, pongs and close are recorded
with their times."""

import asyncio
import datetime
import itertools
import json
import math
import os
import time

import harness
from harness import Fail

import websockets
import websockets.exceptions
from websockets.legacy.client import WebSocketClientProtocol


def now_ms():
    return time.time() * 1000.0


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, dict):
        return "{ " + ", ".join("%s = %s" % (json.dumps(k), toml_value(x)) for k, x in v.items()) + " }"
    raise TypeError("no TOML for %r" % (v,))


def config_text(rules, seed=None):
    """A configuration file: [proxy] seed (if given) and one [[rule]] per dict."""
    out = []
    if seed is not None:
        out += ["[proxy]", "seed = %d" % seed, ""]
    for r in rules:
        out.append("[[rule]]")
        for k, v in r.items():
            out.append("%s = %s" % (k, toml_value(v)))
        out.append("")
    return "\n".join(out)


_cfg_ids = itertools.count(1)


def write_config(name, rules, seed=None, text=None):
    path = os.path.join(harness.LOG_DIR, "%s-%d.toml" % (name, next(_cfg_ids)))
    with open(path, "w", encoding="utf-8") as f:
        f.write(text if text is not None else config_text(rules, seed))
    return path


def replace_file(path, text):
    """Writes path's new content in one step (as a ConfigMap update would)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


class Proxies:
    """Proxies started with a rules file; all stopped by stop_all()."""

    def __init__(self, binary):
        self.binary = binary
        self.started = []

    async def start(self, name, rules, upstream="echo", seed=42, config_path=None):
        path = config_path or write_config(name, rules, seed)
        p = await harness.start_proxy(self.binary, upstream, name, extra=("--config", path))
        p.config_path = path
        self.started.append(p)
        return p

    async def stop_all(self):
        for p in self.started:
            await asyncio.to_thread(p.stop)


def parse_ts(ts):
    """Wall-clock milliseconds of a log line's "ts" (ISO 8601, or epoch seconds)."""
    if isinstance(ts, (int, float)):
        return float(ts) * 1000.0
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000.0


class TimedClient(WebSocketClientProtocol):
    """Client protocol that notes when control frames arrive."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.close_frame_at = None
        self.pong_times = []

    async def read_frame(self, max_size):
        frame = await super().read_frame(max_size)
        op = int(frame.opcode)
        if op == 0x8 and self.close_frame_at is None:
            self.close_frame_at = time.monotonic()
        elif op == 0xA:
            self.pong_times.append((time.monotonic(), bytes(frame.data)))
        return frame


class Msg:
    __slots__ = ("mono", "wall", "data")

    def __init__(self, mono, wall, data):
        self.mono, self.wall, self.data = mono, wall, data


class Sess:
    """A client connection read in the background until it ends."""

    def __init__(self, ws, started, opened):
        self.ws = ws
        self.started = started   # monotonic time just before connecting
        self.opened = opened     # monotonic time the handshake completed
        self.opened_wall = now_ms()
        self.msgs = []
        self.end_at = None       # monotonic time the connection ended
        self.code = None
        self.reason = None
        self.close_rcvd = None
        self.cause = None
        self.ended = asyncio.Event()
        self._task = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, url, **kw):
        kw.setdefault("ping_interval", None)
        kw.setdefault("close_timeout", 2)
        kw.setdefault("open_timeout", 10)
        kw.setdefault("max_size", 16 << 20)
        kw.setdefault("compression", None)
        kw.setdefault("create_protocol", TimedClient)
        started = time.monotonic()
        ws = await websockets.connect(url, **kw)
        return cls(ws, started, time.monotonic())

    async def _read(self):
        try:
            async for m in self.ws:
                self.msgs.append(Msg(time.monotonic(), now_ms(), m))
        except websockets.exceptions.ConnectionClosed as exc:
            self.cause = exc.__cause__
        except Exception as exc:  # noqa: BLE001
            self.cause = exc
        self.end_at = time.monotonic()
        try:
            await asyncio.wait_for(self.ws.wait_closed(), 5)
        except asyncio.TimeoutError:
            pass
        self.code = self.ws.close_code
        self.reason = self.ws.close_reason
        self.close_rcvd = self.ws.close_rcvd
        self.ended.set()

    @property
    def closed_at(self):
        """When the close was observed: the close frame, or else the end."""
        return self.ws.close_frame_at or self.end_at

    def since_start(self, t):
        return t - self.started

    def texts(self, pred=None):
        return [m.data for m in self.msgs if pred is None or pred(m.data)]

    async def wait_end(self, timeout=5.0):
        try:
            await asyncio.wait_for(asyncio.shield(self.ended.wait()), timeout)
        except asyncio.TimeoutError:
            raise Fail("expected the connection to end within %.1fs; it stayed open (messages %s)" % (
                timeout, harness.short(self.texts())))
        return self

    async def stays_open(self, seconds):
        """Fails if the connection ends within seconds."""
        try:
            await asyncio.wait_for(asyncio.shield(self.ended.wait()), seconds)
        except asyncio.TimeoutError:
            return
        raise Fail("expected the connection to stay open; it ended after %.0fms with %s" % (
            (self.end_at - self.opened) * 1000, self.outcome()))

    def outcome(self):
        return "code %s reason %r" % (self.code, self.reason)

    async def wait_msg(self, pred, timeout=5.0, after=0):
        """The first message from index `after` on for which pred holds."""
        deadline = time.monotonic() + timeout
        i = after
        while True:
            while i < len(self.msgs):
                if pred(self.msgs[i].data):
                    return self.msgs[i]
                i += 1
            if self.ended.is_set():
                raise Fail("expected a message; the connection ended with %s" % self.outcome())
            if time.monotonic() >= deadline:
                raise Fail("expected a message within %.1fs; got none" % timeout)
            await asyncio.sleep(0.005)

    async def echo(self, text, timeout=5.0):
        """Sends text and waits for it to come back; returns the round trip in seconds."""
        mark = len(self.msgs)
        t0 = time.monotonic()
        await self.ws.send(text)
        m = await self.wait_msg(lambda d: d == text, timeout, after=mark)
        return m.mono - t0

    async def abort(self):
        if not self.ended.is_set():
            self.ws.transport.abort()
            try:
                await asyncio.wait_for(asyncio.shield(self.ended.wait()), 5)
            except asyncio.TimeoutError:
                pass
        self._task.cancel()

    async def close(self):
        if not self.ended.is_set():
            try:
                await asyncio.wait_for(self.ws.close(), 3)
            except Exception:  # noqa: BLE001
                pass
        await self.abort()


def ms(seconds):
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "n/a"
    return "%.0fms" % (seconds * 1000)
