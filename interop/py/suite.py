"""Interop tests with Python's `websockets` library as the client.

Usage: /usr/bin/python3 interop/py/suite.py --bin PATH/TO/wschaos

Upstreams: interop/py/upstream.py (websockets), interop/node/upstream.js
(ws, when node and its packages are present), interop/py/rawupstream.py
(hand-written frames), and an http.server for plain HTTP.
"""

import argparse
import json
import asyncio
import http.server
import os
import shutil
import socket
import struct
import sys
import threading
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import harness  # noqa: E402
import wsraw  # noqa: E402
from harness import Fail, Skip, check, check_payload, check_true, event_for  # noqa: E402

try:
    import websockets
    import websockets.exceptions
    from websockets.legacy.client import WebSocketClientProtocol
except ImportError:  # reported by main()
    websockets = None
    WebSocketClientProtocol = object

CI = os.environ.get("CI") == "true"
SIZES = [0, 125, 126, 65535, 65536, 16 << 20]
CLOSE_CODES = [1000, 1001, 1011, 3000, 4999]

_ids = 0


def tid():
    global _ids
    _ids += 1
    return "py%d" % _ids


class RecordingClient(WebSocketClientProtocol):
    """Client protocol that records every control frame it receives."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.control_log = []

    async def read_frame(self, max_size):
        frame = await super().read_frame(max_size)
        if int(frame.opcode) >= 8:
            self.control_log.append((int(frame.opcode), bytes(frame.data)))
        return frame

    def pongs(self):
        return [d for op, d in self.control_log if op == 0xA]


async def connect(url, **kw):
    kw.setdefault("ping_interval", None)
    kw.setdefault("close_timeout", 3)
    kw.setdefault("open_timeout", 10)
    kw.setdefault("max_size", 64 << 20)
    kw.setdefault("max_queue", 64)
    kw.setdefault("compression", None)
    kw.setdefault("create_protocol", RecordingClient)
    return await websockets.connect(url, **kw)


def payload(kind, n):
    raw = os.urandom(n)
    if kind == "binary":
        return raw
    table = bytes((0x20 + (i % 95)) for i in range(256))  # printable ASCII
    return raw.translate(table).decode("ascii")


async def expect_closed(ws, timeout=10.0):
    """Reads until the connection is closed; fails if a message arrives."""
    try:
        msg = await asyncio.wait_for(ws.recv(), timeout)
    except websockets.exceptions.ConnectionClosed:
        return
    except asyncio.TimeoutError:
        raise Fail("expected the connection to close within %.0fs; it stayed open" % timeout)
    raise Fail("expected the connection to close, got a message %s" % harness.short(msg))


class Target:
    def __init__(self, name, proc, proxy, up_port):
        self.name = name      # "py" or "node"
        self.proc = proc      # upstream process (events)
        self.proxy = proxy    # proxy in front of it
        self.up_port = up_port

    def url(self, path):
        return self.proxy.url + path


# ---------------------------------------------------------------- library tests

def library_tests(t):
    """Tests with the python client against a library upstream t."""
    tests = []
    label = "py-client->proxy->%s-upstream" % t.name

    def add(name, fn, timeout=30.0):
        tests.append(("%s: %s" % (label, name), fn, timeout))

    for kind in ("text", "binary"):
        for n in SIZES:
            def mk(kind=kind, n=n):
                async def fn():
                    data = payload(kind, n)
                    ws = await connect(t.url("/echo?id=%s" % tid()))
                    await ws.send(data)
                    got = await asyncio.wait_for(ws.recv(), 60)
                    check_payload("echoed %s message of %d bytes" % (kind, n), got, data)
                    await ws.close()
                    check("close code after normal close", ws.close_code, 1000)
                return fn
            add("echo %s %d bytes" % (kind, n), mk(), timeout=90 if n > 65536 else 30)

    async def utf8():
        data = "héllo wörld ✓ 日本語 🎉" * 50
        ws = await connect(t.url("/echo?id=%s" % tid()))
        await ws.send(data)
        check_payload("echoed utf-8 text", await asyncio.wait_for(ws.recv(), 10), data)
        await ws.close()
    add("echo multi-byte utf-8 text", utf8)

    for kind in ("text", "binary"):
        def mkfrag(kind=kind):
            async def fn():
                parts = ["frag-one ", "frag-two ", "frag-three"]
                if kind == "binary":
                    parts = [p.encode() for p in parts]
                ping_data = b"mid-ping"
                i = tid()
                path = ("/frames?id=%s" if t.name == "py" else "/echo?id=%s") % i
                ws = await connect(t.url(path))
                waiters = []

                async def fragments():
                    yield parts[0]
                    waiters.append(await ws.ping(ping_data))
                    yield parts[1]
                    yield parts[2]

                await ws.send(fragments())
                reply = await asyncio.wait_for(ws.recv(), 10)
                await asyncio.wait_for(waiters[0], 5)
                check("pong payloads received by the client", ws.pongs(), [ping_data])
                ev = await t.proc.wait_event(event_for("ping", i))
                check("ping payload seen by the upstream", ev and ev["data"], ping_data.hex())
                if t.name == "py":
                    frames = json.loads(reply)
                    op = 1 if kind == "text" else 2
                    enc = (lambda p: p.encode().hex()) if kind == "text" else (lambda p: p.hex())
                    want = [
                        {"op": op, "fin": False, "rsv1": False, "data": enc(parts[0])},
                        {"op": 9, "fin": True, "rsv1": False, "data": ping_data.hex()},
                        {"op": 0, "fin": False, "rsv1": False, "data": enc(parts[1])},
                        {"op": 0, "fin": False, "rsv1": False, "data": enc(parts[2])},
                        {"op": 0, "fin": True, "rsv1": False, "data": ""},
                    ]
                    check("frames received by the upstream", frames, want)
                else:
                    whole = parts[0] + parts[1] + parts[2]
                    check_payload("reassembled fragmented message echoed", reply, whole)
                await ws.close()
            return fn
        add("fragmented %s message with a ping between fragments" % kind, mkfrag())

    for size in (0, 14, 125):
        def mkping(size=size):
            async def fn():
                data = bytes((i * 7 + 3) % 256 for i in range(size))
                i = tid()
                ws = await connect(t.url("/echo?id=%s" % i))
                waiter = await ws.ping(data)
                await asyncio.wait_for(waiter, 5)
                await asyncio.sleep(0.2)
                check("pong payloads received by the client", ws.pongs(), [data])
                ev = await t.proc.wait_event(event_for("ping", i))
                check("ping payload seen by the upstream", ev and ev["data"], data.hex())
                await ws.close()
            return fn
        add("ping %d-byte payload round trip" % size, mkping())

    async def delayed_pong():
        i = tid()
        ws = await connect(t.url("/echo?id=%s&pongdelay=600" % i))
        t0 = time.monotonic()
        waiter = await ws.ping(b"slow")
        await asyncio.wait_for(waiter, 5)
        elapsed = time.monotonic() - t0
        check_true("pong must come from the upstream, which delays it 600ms (elapsed seconds)",
                   elapsed >= 0.55, round(elapsed, 3))
        await asyncio.sleep(0.2)
        check("pongs received", ws.pongs(), [b"slow"])
        await ws.close()
        return "pong after %.0fms" % (elapsed * 1000)
    add("pong is answered by the upstream, not the proxy", delayed_pong)

    for code in CLOSE_CODES:
        reason = "client bye %d ✓" % code

        def mkc(code=code, reason=reason):
            async def fn():
                i = tid()
                ws = await connect(t.url("/echo?id=%s" % i))
                await ws.send("x")
                check("echo before close", await asyncio.wait_for(ws.recv(), 5), "x")
                await ws.close(code, reason)
                ev = await t.proc.wait_event(event_for("closed", i))
                check("close seen by the upstream (code, reason)",
                      ev and (ev["code"], ev["reason"]), (code, reason))
                check("close echoed back to the client (code, reason)",
                      (ws.close_code, ws.close_reason), (code, reason))
            return fn
        add("client-initiated close %d with reason" % code, mkc())

    for code in CLOSE_CODES:
        reason = "server bye %d ✓" % code

        def mks(code=code, reason=reason):
            async def fn():
                i = tid()
                q = urllib.parse.urlencode({"id": i, "code": code, "reason": reason})
                ws = await connect(t.url("/close?" + q))
                await ws.send("go")
                await expect_closed(ws)
                check("close seen by the client (code, reason)",
                      (ws.close_code, ws.close_reason), (code, reason))
                ev = await t.proc.wait_event(event_for("closed", i))
                check("close echo seen by the upstream (code)", ev and ev["code"], code)
            return fn
        add("server-initiated close %d with reason" % code, mks())

    async def serverping():
        i = tid()
        data = "srv-ping-" + i
        ws = await connect(t.url("/serverping?id=%s&data=%s" % (i, data)))
        await ws.send("go")
        check("upstream message after its ping was answered",
              await asyncio.wait_for(ws.recv(), 10), "pong-received")
        check("pings received by the client", [d for op, d in ws.control_log if op == 0x9], [data.encode()])
        ev = await t.proc.wait_event(event_for("pong", i))
        check("pong seen by the upstream (payload hex, count)",
              ev and (ev["data"], ev["count"]), (data.encode().hex(), 1))
        await ws.close()
    add("upstream-initiated ping answered by the client", serverping)

    async def no_common_subproto():
        i = tid()
        ws = await connect(t.url("/echo?id=%s" % i), subprotocols=["x"])
        check("subprotocol seen by the client", ws.subprotocol, None)
        ev = await t.proc.wait_event(event_for("open", i))
        check("subprotocols offered at the upstream (offered, chosen)",
              ev and (ev["protocols"], ev["protocol"]), (["x"], None))
        await ws.close()
    add("subprotocol offered but none chosen", no_common_subproto)

    async def concurrent():
        async def one(k):
            ws = await connect(t.url("/echo?id=%s" % tid()))
            try:
                for j in range(5):
                    msg = "session %d message %d %s" % (k, j, "x" * (k * 37 + j))
                    await ws.send(msg)
                    check("echo in session %d" % k, await asyncio.wait_for(ws.recv(), 10), msg)
            finally:
                await ws.close()
            return ws.close_code
        codes = await asyncio.gather(*(one(k) for k in range(20)))
        check("close codes of 20 concurrent sessions", codes, [1000] * 20)
    add("20 concurrent sessions keep their own messages", concurrent)

    async def subproto():
        i = tid()
        ws = await connect(t.url("/echo?id=%s" % i), subprotocols=["a", "b"])
        check("subprotocol seen by the client", ws.subprotocol, "b")
        ev = await t.proc.wait_event(event_for("open", i))
        check("subprotocols offered at the upstream", ev and ev["protocols"], ["a", "b"])
        check("subprotocol chosen by the upstream", ev and ev["protocol"], "b")
        await ws.send("sub")
        check("echo", await asyncio.wait_for(ws.recv(), 5), "sub")
        await ws.close()
    add("subprotocol selection [a,b] -> b", subproto)

    async def deflate():
        i = tid()
        ws = await connect(t.url("/echo?id=%s" % i), compression="deflate")
        names = [e.name for e in ws.extensions]
        check_true("client negotiated extensions include permessage-deflate",
                   "permessage-deflate" in names, names)
        ev = await t.proc.wait_event(event_for("open", i))
        check_true("upstream negotiated extensions include permessage-deflate",
                   ev is not None and "permessage-deflate" in ev["extensions"], ev)
        text = "wschaos compressible text " * 4000
        binary = bytes(range(256)) * 512
        await ws.send(text)
        check_payload("compressed text echo", await asyncio.wait_for(ws.recv(), 10), text)
        await ws.send(binary)
        check_payload("compressed binary echo", await asyncio.wait_for(ws.recv(), 10), binary)
        await ws.send("short")
        check_payload("short text echo", await asyncio.wait_for(ws.recv(), 10), "short")
        await ws.close()
        check("close code", ws.close_code, 1000)
    add("permessage-deflate negotiated end to end", deflate)

    async def forbidden():
        try:
            ws = await connect(t.url("/forbidden?id=%s" % tid()))
        except websockets.exceptions.InvalidStatusCode as exc:
            check("HTTP status seen by the client", exc.status_code, 403)
            return
        await ws.close()
        raise Fail("HTTP status seen by the client: got 101 (connection opened), want 403")
    add("upstream answers 403 to the upgrade", forbidden)

    async def pathinfo():
        i = tid()
        path = "/deep/pathinfo?id=%s&a=1&b=x%%20y" % i
        ws = await connect(t.url(path))
        check("request path+query seen by the upstream", await asyncio.wait_for(ws.recv(), 5), path)
        await ws.close()
    add("request path and query forwarded", pathinfo)

    return tests


# ---------------------------------------------------------------- other tests

def raw_client_violation_tests(t):
    tests = []
    for name in wsraw.CLIENT_VIOLATIONS:
        def mk(name=name):
            async def fn():
                i = tid()
                conn, status, _ = await asyncio.to_thread(
                    wsraw.client_handshake, "127.0.0.1", t.proxy.port, "/echo?id=%s" % i)
                try:
                    check("handshake status", status, 101)
                    conn.send(wsraw.build_frame(wsraw.OP_TEXT, b"warm-up", mask=wsraw.new_mask()))
                    f = await asyncio.to_thread(conn.read_frame, time.monotonic() + 5)
                    check("echo before the violation", (f.opcode, f.payload), (wsraw.OP_TEXT, b"warm-up"))
                    conn.send(wsraw.violation_bytes(name, "client"))
                    res = await asyncio.to_thread(conn.wait_close, 5)
                    if res["ended"] == "close":
                        try:
                            conn.send(wsraw.build_frame(wsraw.OP_CLOSE, wsraw.close_payload(1002),
                                                        mask=wsraw.new_mask()))
                        except OSError:
                            pass
                finally:
                    conn.close()
                check("violator (raw client) receives", (res["ended"], res["close_code"]), ("close", 1002))
                check_true("close reason names the violation (non-empty)", res["reason"] != "", res["reason"])
                check("close frame from the proxy (acting as server) is masked", res.get("masked"), False)
                ev = await t.proc.wait_event(event_for("closed", i))
                check("close code seen by the %s upstream" % t.name, ev and ev["code"], 1001)
                return "reason %r" % res["reason"]
            return fn
        tests.append(("raw-client->proxy->%s-upstream: violation %s" % (t.name, name), mk(), 20))
    return tests


def raw_client_rst_test(t):
    async def fn():
        i = tid()
        conn, status, _ = await asyncio.to_thread(
            wsraw.client_handshake, "127.0.0.1", t.proxy.port, "/echo?id=%s" % i)
        try:
            check("handshake status", status, 101)
            conn.send(wsraw.build_frame(wsraw.OP_TEXT, b"warm-up", mask=wsraw.new_mask()))
            f = await asyncio.to_thread(conn.read_frame, time.monotonic() + 5)
            check("echo before the reset", (f.opcode, f.payload), (wsraw.OP_TEXT, b"warm-up"))
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            conn.close()
        ev = await t.proc.wait_event(event_for("closed", i), timeout=8)
        check("close code seen by the %s upstream" % t.name, ev and ev["code"], 1006)
    return ("raw-client->proxy->%s-upstream: client RST mid-session" % t.name, fn, 20)


def raw_upstream_violation_tests(raw, proxy):
    tests = []
    for name in wsraw.SERVER_VIOLATIONS:
        def mk(name=name):
            async def fn():
                i = tid()
                ws = await connect(proxy.url + "/viol/%s?id=%s" % (name, i), compression="deflate")
                await ws.send("go")
                await expect_closed(ws)
                check("close code seen by the python client", ws.close_code, 1001)
                ev = await raw.wait_event(event_for("result", i), timeout=8)
                check_true("raw upstream reported", ev is not None, raw.snapshot()[-3:])
                check("violator (raw upstream) receives", (ev["ended"], ev["close_code"]), ("close", 1002))
                check_true("close reason names the violation (non-empty)", ev["reason"] != "", ev["reason"])
                check("close frame from the proxy (acting as client) is masked", ev.get("masked"), True)
                return "reason %r" % ev["reason"]
            return fn
        tests.append(("py-client->proxy->raw-upstream: violation %s" % name, mk(), 20))
    return tests


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class HelloHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from http.server: %s\n" % self.path).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def http_get(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        return resp.status, resp.read()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("WSCHAOS_BIN"))
    ap.add_argument("--filter", default="", help="run only tests whose name contains this")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("INTEROP_BUDGET", "80")),
                    help="seconds for all tests; tests left when it runs out fail")
    args = ap.parse_args()
    r = harness.Runner("python", args.budget)

    if websockets is None:
        if CI:
            r.fail_setup("python websockets library", "not importable by %s" % sys.executable)
        else:
            print("SKIP python suite: websockets library not importable by %s" % sys.executable)
        r.summary()
        return 1 if r.failed else 0
    if not args.bin or not os.access(args.bin, os.X_OK):
        r.fail_setup("proxy binary", "not found: %r (use --bin or WSCHAOS_BIN)" % args.bin)
        r.summary()
        return 1

    py_up = harness.Proc([sys.executable, os.path.join(HERE, "upstream.py")], "py-upstream")
    raw_up = harness.Proc([sys.executable, os.path.join(HERE, "rawupstream.py")], "raw-upstream-py")
    node_bin = shutil.which("node")
    node_ok = node_bin and os.path.isdir(os.path.join(ROOT, "node", "node_modules", "ws"))
    node_up = None
    if node_ok:
        node_up = harness.Proc([node_bin, os.path.join(ROOT, "node", "upstream.js")], "node-upstream-py")

    proxies = []
    httpd = None
    try:
        py_port = await asyncio.to_thread(py_up.wait_listening)
        raw_port = await asyncio.to_thread(raw_up.wait_listening)
        targets = []
        px = await harness.start_proxy(args.bin, "ws://127.0.0.1:%d" % py_port, "proxy-py-main")
        proxies.append(px)
        targets.append(Target("py", py_up, px, py_port))
        if node_up is not None:
            node_port = await asyncio.to_thread(node_up.wait_listening)
            pxn = await harness.start_proxy(args.bin, "ws://127.0.0.1:%d" % node_port, "proxy-node-main")
            proxies.append(pxn)
            targets.append(Target("node", node_up, pxn, node_port))
        px_raw = await harness.start_proxy(args.bin, "ws://127.0.0.1:%d" % raw_port, "proxy-raw-main")
        proxies.append(px_raw)

        tests = []
        for t in targets:
            tests += library_tests(t)
        if node_up is None:
            async def node_missing():
                msg = "node or interop/node/node_modules/ws missing (run npm ci --prefix interop/node)"
                if CI:
                    raise Fail(msg)
                raise Skip(msg)
            tests.append(("py-client->proxy->node-upstream: all tests", node_missing, 5))

        async def base_path():
            p = await harness.start_proxy(args.bin, "ws://127.0.0.1:%d/base" % py_port, "proxy-basepath")
            proxies.append(p)
            ws = await connect(p.url + "/pathinfo?q=1")
            check("path seen by the upstream", await asyncio.wait_for(ws.recv(), 5), "/base/pathinfo?q=1")
            await ws.close()
        tests.append(("py-client->proxy(upstream has a base path)->py-upstream: path joined", base_path, 20))

        async def upstream_down():
            port = free_port()
            p = await harness.start_proxy(args.bin, "ws://127.0.0.1:%d" % port, "proxy-down")
            proxies.append(p)
            try:
                ws = await connect(p.url + "/echo")
            except websockets.exceptions.InvalidStatusCode as exc:
                check("HTTP status seen by the client", exc.status_code, 502)
                return
            await ws.close()
            raise Fail("HTTP status seen by the client: got 101 (connection opened), want 502")
        tests.append(("py-client->proxy->(nothing listening): upstream down", upstream_down, 20))

        async def upstream_rst():
            i = tid()
            ws = await connect(px_raw.url + "/rst?id=%s" % i)
            await ws.send("hello")
            await expect_closed(ws)
            check("close code seen by the client", ws.close_code, 1006)
            ev = await raw_up.wait_event(event_for("rst", i))
            check("raw upstream got the client's frame before resetting", ev and ev["got_frame"], wsraw.OP_TEXT)
        tests.append(("py-client->proxy->raw-upstream: upstream RST mid-session", upstream_rst, 20))

        async def fragsend():
            i = tid()
            ws = await connect(px_raw.url + "/fragsend?id=%s" % i)
            await ws.send("go")
            check("fragmented message from the upstream", await asyncio.wait_for(ws.recv(), 10), "abcdef")
            check("pings received by the client", [d for op, d in ws.control_log if op == 0x9], [b"raw-ping"])
            ev = await raw_up.wait_event(event_for("fragsend", i))
            check("pong seen by the raw upstream (payload, masked)",
                  ev and (ev["pong"], ev["pong_masked"]), (b"raw-ping".hex(), True))
            await ws.close()
            check("close code", ws.close_code, 1000)
        tests.append(("py-client->proxy->raw-upstream: fragmented message with a ping between fragments, server to client",
                      fragsend, 20))

        def mk_graceful(t):
            async def graceful():
                # Repeated: shutdown races only show now and then.
                rounds, outcomes, first_bad = 40, {}, None
                up_port = t.up_port
                for n in range(rounds):
                    p = await harness.start_proxy(args.bin, "ws://127.0.0.1:%d" % up_port,
                                                  "proxy-sigterm-%s-%d" % (t.name, n))
                    proxies.append(p)
                    i = tid()
                    ws = await connect(p.url + "/echo?id=%s" % i)
                    await ws.send("before shutdown")
                    check("echo", await asyncio.wait_for(ws.recv(), 5), "before shutdown")
                    p.terminate()
                    await expect_closed(ws)
                    ev = await t.proc.wait_event(event_for("closed", i))
                    rc = await asyncio.to_thread(p.wait_exit, 15)
                    got = (ws.close_code, ev and ev["code"], rc)
                    key = "client %s, upstream %s, exit %s" % got
                    outcomes[key] = outcomes.get(key, 0) + 1
                    if got != (1001, 1001, 0) and first_bad is None:
                        first_bad = "round %d: %s (proxy log %s)" % (n + 1, key, p.log_path)
                if first_bad:
                    raise Fail("close codes and proxy exit code over %d rounds: got %s, want all "
                               "'client 1001, upstream 1001, exit 0'; first bad %s" % (rounds, outcomes, first_bad))
                return "%d rounds" % rounds
            return graceful
        for t in targets:
            tests.append(("py-client->proxy->%s-upstream: graceful shutdown on SIGTERM (40 rounds)" % t.name,
                          mk_graceful(t), 60))

        for t in targets:
            tests.append(raw_client_rst_test(t))
            tests += raw_client_violation_tests(t)
        tests += raw_upstream_violation_tests(raw_up, px_raw)

        async def plain_http():
            httpd_ = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HelloHandler)
            nonlocal httpd
            httpd = httpd_
            threading.Thread(target=httpd_.serve_forever, daemon=True).start()
            p = await harness.start_proxy(args.bin, "ws://127.0.0.1:%d" % httpd_.server_address[1], "proxy-http")
            proxies.append(p)
            status, body = await asyncio.to_thread(http_get, p.http_url("/some/page?x=1"))
            check("HTTP status", status, 200)
            check("HTTP body", body, b"hello from http.server: /some/page?x=1\n")
        tests.append(("http-client->proxy->python-http.server: plain GET", plain_http, 20))

        for name, fn, timeout in tests:
            if args.filter and args.filter not in name:
                continue
            await r.run(name, fn, timeout)
    except Exception as exc:  # noqa: BLE001
        r.fail_setup("suite setup", "%s: %s" % (type(exc).__name__, exc))
    finally:
        for p in proxies:
            await asyncio.to_thread(p.stop)
        if httpd is not None:
            httpd.shutdown()
        for proc in (py_up, raw_up, node_up):
            if proc is not None:
                proc.stop()
        harness.kill_children()
    return harness.finish(r)


if __name__ == "__main__":
    harness.run_suite(main)
