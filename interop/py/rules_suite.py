"""Rules tests with Python's `websockets` library as the client.

Usage: /usr/bin/python3 interop/py/rules_suite.py --bin /tmp/wschaos [--filter TEXT]

Every test starts its own proxy with a rules file written for it, in front
of the built-in echo server or of interop/py/rules_upstream.py (which
reports every message, ping and close it sees), and asserts what the
client and the upstream observe: close codes and reasons, HTTP statuses,
timings, which sessions were hit. Also `wschaos validate` and live reload.
"""

import argparse
import asyncio
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import Fail, check, check_true, event_for  # noqa: E402

try:
    import websockets
    import websockets.exceptions
    import rules_kit as kit  # noqa: E402
    from rules_kit import Sess, ms  # noqa: E402
except ImportError:  # reported by main()
    websockets = None

LABEL = "python-rules"
_ids = 0


def tid():
    global _ids
    _ids += 1
    return "pr%d" % _ids


def up_msgs(up, i):
    """Payloads of the messages the upstream received in session i, in order."""
    return [e["data"] for e in up.snapshot() if event_for("message", i)(e)]


async def up_closed(up, i, timeout=5.0):
    ev = await up.wait_event(event_for("closed", i), timeout)
    if ev is None:
        raise Fail("upstream: no close reported for session %s within %.0fs" % (i, timeout))
    return ev


def check_between(what, got, lo, hi):
    if not (lo <= got <= hi):
        raise Fail("%s: got %s, want between %s and %s" % (what, ms(got), ms(lo), ms(hi)))


def is_fault(rule=None):
    return lambda e: e.get("msg") == "fault fired" and (rule is None or e.get("rule") == rule)


def faults(proxy, rule=None):
    """The 'fault fired' lines so far: for checks that none was written."""
    pred = is_fault(rule)
    return [e for e in proxy.log_lines() if pred(e)]


async def wait_faults(proxy, rule=None, count=1):
    """The 'fault fired' lines, once there are count of them (or 2s passed)."""
    return await proxy.wait_log(is_fault(rule), count)


def conn_error(sess):
    """What ended a connection that got no close frame: 'reset', 'eof' or a description."""
    c = sess.cause
    if isinstance(c, ConnectionResetError):
        return "reset"
    if isinstance(c, EOFError):
        return "eof"
    return "%s(%s)" % (type(c).__name__, c) if c is not None else "none"


def raw_upgrade(port, path, timeout=5.0):
    """An upgrade request with http.client: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={
            "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13",
        })
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# ---------------------------------------------------------------- actions

CLOSE_CASES = [
    # key, code as written, code observed, reason
    ("1001", 1001, 1001, "going away for now"),
    ("1012", 1012, 1012, "service restart"),
    ("service_restart", "service_restart", 1012, "restarting"),
    ("try_again_later", "try_again_later", 1013, "try again later"),
    ("bad_gateway", "bad_gateway", 1014, "bad gateway"),
    ("timeout", "timeout", 3008, "timed out"),
    ("4000", 4000, 4000, "custom ✓ reason"),
    ("none", "none", 1005, ""),
]


def action_tests(env):
    tests = []
    P, up, up_url = env.proxies, env.up, env.up_url

    def add(name, fn, timeout=20):
        tests.append(("%s: %s" % (LABEL, name), fn, timeout))

    async def codes_proxy():
        if env.codes_proxy is None:
            rules = []
            for key, code, _, reason in CLOSE_CASES:
                r = {"name": "code-" + key, "match": {"path": "/code/" + key},
                     "after_messages": 1, "direction": "client", "action": "close", "code": code}
                if reason:
                    r["reason"] = reason
                rules.append(r)
            env.codes_proxy = await P.start("proxy-codes", rules, upstream=up_url)
        return env.codes_proxy

    for key, code, want_code, want_reason in CLOSE_CASES:
        def mk(key=key, code=code, want_code=want_code, want_reason=want_reason):
            async def fn():
                p = await codes_proxy()
                i = tid()
                s = await Sess.open(p.url + "/code/%s?id=%s" % (key, i))
                await s.ws.send("hello")
                await s.wait_end()
                check("close code and reason seen by the client", (s.code, s.reason), (want_code, want_reason))
                check_true("a close frame reached the client", s.close_rcvd is not None, s.close_rcvd)
                ev = await up_closed(up, i)
                check("messages the upstream received", up_msgs(up, i), ["hello"])
                check("close code seen by the upstream (the side not chosen)", ev["code"], 1001)
                fired = await wait_faults(p, "code-" + key)
                check("fault fired log lines (code, reason, action, trigger)",
                      [(f.get("code"), f.get("reason"), f.get("action"), f.get("trigger")) for f in fired],
                      [(want_code, want_reason, "close", "after_messages")])
            return fn
        add("action close code = %s: client sees %d %r" % (json.dumps(code), want_code, want_reason), mk())

    async def kill_proxy():
        if env.kill_proxy is None:
            env.kill_proxy = await P.start("proxy-kill", [
                {"name": "reset", "match": {"path": "/reset"}, "after_messages": 1, "direction": "client",
                 "action": "reset"},
                {"name": "drop", "match": {"path": "/drop"}, "after_messages": 1, "direction": "client",
                 "action": "drop"},
            ], upstream=up_url)
        return env.kill_proxy

    for action, want_end in (("reset", "reset"), ("drop", "eof")):
        def mk(action=action, want_end=want_end):
            async def fn():
                p = await kill_proxy()
                i = tid()
                s = await Sess.open(p.url + "/%s?id=%s" % (action, i))
                await s.ws.send("hello")
                await s.wait_end()
                check("close code seen by the client", s.code, 1006)
                check("close frame received by the client", s.close_rcvd, None)
                check("how the connection ended (ConnectionResetError: reset, EOFError: eof)",
                      conn_error(s), want_end)
                ev = await up_closed(up, i)
                check("messages the upstream received", up_msgs(up, i), ["hello"])
                check("close code seen by the upstream", ev["code"], 1001)
                return "ConnectionClosedError caused by %s" % type(s.cause).__name__
            return fn
        add("action %s: client sees 1006 without a close frame (%s)" % (
            action, "connection reset" if action == "reset" else "clean EOF"), mk())

    async def reject():
        p = await P.start("proxy-reject", [
            {"name": "reject-503", "match": {"path": "/reject"}, "on": "connect", "action": "reject",
             "status": 503, "retry_after": 7, "body": "try again later"},
            {"name": "reject-429", "match": {"path": "/slow"}, "on": "connect", "action": "reject",
             "status": 429, "body": "slow down"},
            {"name": "reject-proto", "match": {"path": "/proto", "subprotocol": "graphql-*"}, "on": "connect",
             "action": "reject", "status": 403, "body": "no graphql"},
        ], upstream=up_url)
        i = tid()
        try:
            s = await Sess.open(p.url + "/reject?id=%s" % i)
        except websockets.exceptions.InvalidStatusCode as exc:
            check("HTTP status seen by websockets", exc.status_code, 503)
            check("Retry-After seen by websockets", exc.headers.get("Retry-After"), "7")
        else:
            await s.abort()
            raise Fail("HTTP status seen by websockets: got 101 (connection opened), want 503")
        i2 = tid()
        status, headers, body = await asyncio.to_thread(raw_upgrade, p.port, "/reject?id=%s" % i2)
        check("HTTP status (raw request)", status, 503)
        check("Retry-After (raw request)", headers.get("retry-after"), "7")
        check("body (raw request)", body, b"try again later")
        i3 = tid()
        status, headers, body = await asyncio.to_thread(raw_upgrade, p.port, "/slow?id=%s" % i3)
        check("HTTP status, status = 429 without retry_after", status, 429)
        check("Retry-After, status = 429 without retry_after", headers.get("retry-after"), None)
        check("body, status = 429", body, b"slow down")
        i4 = tid()
        try:
            s = await Sess.open(p.url + "/proto?id=%s" % i4, subprotocols=["chat", "graphql-ws"])
        except websockets.exceptions.InvalidStatusCode as exc:
            check("HTTP status, reject matched on an offered subprotocol", exc.status_code, 403)
        else:
            await s.abort()
            raise Fail("HTTP status, reject matched on an offered subprotocol: got 101, want 403")
        s = await Sess.open(p.url + "/proto?id=%s" % tid(), subprotocols=["chat", "b"])
        await s.echo("not rejected")
        await s.close()
        await asyncio.sleep(0.2)
        opened = [e for e in up.snapshot() if e.get("event") == "open" and
                  any(event_for("open", x)(e) for x in (i, i2, i3, i4))]
        check("upstream opens for rejected upgrades (never dialed)", opened, [])
    add("action reject on connect: 503 with Retry-After and body; 429; 403 on an offered subprotocol; "
        "upstream never dialed", reject)

    async def hang():
        p = await P.start("proxy-hang", [
            {"name": "hang", "after": "300ms", "action": "hang"},
        ], upstream=up_url)
        i = tid()
        s = await Sess.open(p.url + "/echo?id=%s" % i)
        sent = []   # (monotonic, waiter)
        detected = None
        try:
            for n in range(40):  # at most 4 s of pinging
                sent.append((time.monotonic(), await s.ws.ping(b"p%d" % n)))
                await asyncio.sleep(0.1)
                now = time.monotonic()
                late = [t for t, w in sent if not w.done() and now - t >= 0.5]
                if late:
                    detected = (late[0], now)
                    break
                if s.ended.is_set():
                    break
            check_true("a ping left unanswered for 500ms (client pings every 100ms)", detected is not None,
                       "all %d pings answered; session %s" % (len(sent), "ended " + s.outcome()
                                                             if s.ended.is_set() else "open"))
            answered = [t - s.opened for t, w in sent if w.done() and not w.cancelled() and w.exception() is None]
            check_true("pongs arrived before the hang (300ms after open)", len(answered) >= 1, answered)
            first_late = detected[0] - s.opened
            check_between("first unanswered ping, after open", first_late, 0.2, 0.6)
            check("connection open when the missing pong was detected", (s.ended.is_set(), s.ws.close_frame_at),
                  (False, None))
            await s.ws.send("after the hang")
            await s.stays_open(0.8)
            check("messages echoed during the hang", s.texts(), [])
            pings_up = [e for e in up.snapshot() if event_for("ping", i)(e)]
            check("pings seen by the upstream == pongs seen by the client", len(pings_up), len(answered))
            check("messages the upstream received during the hang", up_msgs(up, i), [])
            return "%d pings answered, first unanswered %s after open" % (len(answered), ms(first_late))
        finally:
            await s.abort()
            for _, w in sent:
                if w.done() and not w.cancelled():
                    w.exception()  # retrieved: the pings still waiting failed with the connection
                else:
                    w.cancel()
    add("action hang: pings every 100ms, no pong within 500ms, TCP stays open", hang)

    async def hang_duration():
        p = await P.start("proxy-hang-duration", [
            {"name": "hang-then-reset", "after": "200ms", "action": "hang", "duration": "500ms"},
        ], upstream=up_url)
        i = tid()
        s = await Sess.open(p.url + "/echo?id=%s" % i)
        await s.wait_end(3)
        check("close code seen by the client", s.code, 1006)
        check("close frame received by the client", s.close_rcvd, None)
        check("how the connection ended", conn_error(s), "reset")
        check_between("end after connect (after 200ms + duration 500ms)", s.since_start(s.end_at), 0.7, 1.1)
        return "reset %s after connect" % ms(s.since_start(s.end_at))
    add("action hang with duration = 500ms: the client is reset after that long", hang_duration)

    async def hang_client():
        p = await P.start("proxy-hang-client", [
            {"name": "hang-client", "after": "300ms", "action": "hang", "direction": "client"},
        ], upstream=up_url)
        i = tid()
        s = await Sess.open(p.url + "/hang/ticker?every=100&ticks=30&id=%s" % i)
        try:
            await s.echo("before the hang")
            wait = s.opened + 0.4 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            mark = len(s.msgs)
            await s.ws.send("during the hang")
            await s.stays_open(0.6)
            later = [json.loads(m.data) for m in s.msgs[mark:]]
            check("client messages echoed during the hang", [d for d in later if "tick" not in d], [])
            lags = [m.wall - json.loads(m.data)["t"] for m in s.msgs[mark:] if "tick" in json.loads(m.data)]
            check_true("upstream ticks still arriving during the hang (>= 4, each lag < 150ms)",
                       len(lags) >= 4 and max(lags) < 150, ["%.0fms" % x for x in lags])
            check("messages the upstream received", up_msgs(up, i), ["before the hang"])
            return "%d ticks during the hang" % len(lags)
        finally:
            await s.abort()
    add('action hang direction = "client": client messages stop, upstream messages still flow', hang_client)

    def mk_delay(direction):
        async def fn():
            p = await P.start("proxy-delay-" + direction, [
                {"name": "slow", "match": {"path": "/delay/*"}, "after": "500ms", "action": "delay",
                 "direction": direction, "latency": "300ms"},
            ], upstream=up_url)
            i = tid()
            s = await Sess.open(p.url + "/delay/ticker?every=100&ticks=30&id=%s" % i)
            try:
                before = []
                for n in range(3):
                    before.append(await s.echo(json.dumps({"echo": "before-%d" % n, "t": kit.now_ms()})))
                check_true("echo round trips before the trigger all < 150ms", max(before) < 0.15,
                           [ms(x) for x in before])
                wait = s.opened + 0.7 - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                trigger_wall = s.opened_wall + 500
                after = []
                sent_after = []
                for n in range(3):
                    txt = json.dumps({"echo": "after-%d" % n, "t": kit.now_ms()})
                    sent_after.append(txt)
                    after.append(await s.echo(txt))
                lo, hi = {"client": (0.3, 0.55), "upstream": (0.3, 0.55), "both": (0.6, 0.9)}[direction]
                check_true("echo round trips after the trigger all in [%s, %s]" % (ms(lo), ms(hi)),
                           all(lo <= x <= hi for x in after), [ms(x) for x in after])
                # Upstream to client: the ticks sent after the trigger.
                ticks = []
                for m in s.msgs:
                    d = json.loads(m.data)
                    if "tick" in d:
                        ticks.append((d["tick"], d["t"], m.wall))
                check("tick numbers arrive in order", [n for n, _, _ in ticks], sorted(n for n, _, _ in ticks))
                late_ticks = [(n, w - t) for n, t, w in ticks if t > trigger_wall + 50]
                check_true("ticks sent after the trigger received", len(late_ticks) >= 3, late_ticks)
                lags = [lag for _, lag in late_ticks]
                if direction == "client":
                    check_true("upstream-to-client ticks not delayed: every lag < 150ms", max(lags) < 150,
                               ["%.0fms" % x for x in lags])
                else:
                    check_true("upstream-to-client ticks delayed: every lag >= 300ms", min(lags) >= 300,
                               ["%.0fms" % x for x in lags])
                # Client to upstream: when the upstream got the messages sent after the trigger.
                up_lags = []
                for e in up.snapshot():
                    if event_for("message", i)(e) and e["data"] in sent_after:
                        up_lags.append(e["t"] - json.loads(e["data"])["t"])
                check("client messages sent after the trigger that reached the upstream", len(up_lags), 3)
                if direction == "upstream":
                    check_true("client-to-upstream messages not delayed: every lag < 150ms", max(up_lags) < 150,
                               ["%.0fms" % x for x in up_lags])
                else:
                    check_true("client-to-upstream messages delayed: every lag >= 300ms", min(up_lags) >= 300,
                               ["%.0fms" % x for x in up_lags])
                return "rtt before %s, after %s; tick lag %.0f..%.0fms; upstream lag %.0f..%.0fms" % (
                    "/".join(ms(x) for x in before), "/".join(ms(x) for x in after),
                    min(lags), max(lags), min(up_lags), max(up_lags))
            finally:
                await s.abort()
        return fn
    for direction in ("client", "upstream", "both"):
        add("action delay latency = 300ms, direction = %s" % direction, mk_delay(direction))

    def mk_to(to):
        async def fn():
            p = await P.start("proxy-to-" + to, [
                {"name": "to-" + to, "after_messages": 1, "direction": "client", "action": "close",
                 "code": 4000, "reason": "to " + to, "to": to},
            ], upstream=up_url)
            i = tid()
            s = await Sess.open(p.url + "/echo?id=%s" % i)
            await s.ws.send("hello")
            await s.wait_end()
            ev = await up_closed(up, i)
            want_client = (1001,) if to == "upstream" else (4000, "to " + to)
            got_client = (s.code,) if to == "upstream" else (s.code, s.reason)
            check("close seen by the client", got_client, want_client)
            check("close code and reason seen by the upstream", (ev["code"], ev["reason"]), (4000, "to " + to))
        return fn
    add('action close to = "upstream": the upstream sees 4000, the client 1001', mk_to("upstream"))
    add('action close to = "both": both sides see 4000 and the reason', mk_to("both"))
    return tests


# ---------------------------------------------------------------- triggers

def trigger_tests(env):
    tests = []
    P, up, up_url = env.proxies, env.up, env.up_url

    def add(name, fn, timeout=20):
        tests.append(("%s: %s" % (LABEL, name), fn, timeout))

    async def on_connect():
        p = await P.start("proxy-on-connect", [
            {"name": "at-connect", "on": "connect", "action": "close", "code": 4000, "reason": "on connect"},
        ], upstream=up_url)
        i = tid()
        s = await Sess.open(p.url + "/echo?id=%s" % i)
        await s.wait_end(3)
        check("close seen by the client, without sending anything", (s.code, s.reason), (4000, "on connect"))
        check_true("close within 200ms of connecting", s.since_start(s.closed_at) < 0.2,
                   ms(s.since_start(s.closed_at)))
        check("messages received", s.texts(), [])
        ev = await up_closed(up, i)
        check("close code seen by the upstream", ev["code"], 1001)
        return "closed %s after connecting" % ms(s.since_start(s.closed_at))
    add('trigger on = "connect": close right after the upgrade', on_connect)

    async def after():
        p = await P.start("proxy-after", [
            {"name": "after-300", "after": "300ms", "action": "close", "code": 4000, "reason": "after"},
        ], upstream=up_url)
        i = tid()
        s = await Sess.open(p.url + "/echo?id=%s" % i)
        rtt = await s.echo("still open")
        await s.wait_end(3)
        check("close seen by the client", (s.code, s.reason), (4000, "after"))
        check_between("close after connect", s.since_start(s.closed_at), 0.3, 0.7)
        return "echo in %s, closed %s after connect" % (ms(rtt), ms(s.since_start(s.closed_at)))
    add('trigger after = "300ms": the close is not seen before 300ms', after)

    async def after_range():
        p = await P.start("proxy-after-range", [
            {"name": "range", "after": "200ms..600ms", "action": "close", "code": 4000, "reason": "range"},
        ], upstream=up_url)
        sessions = await asyncio.gather(*[Sess.open(p.url + "/echo?id=%s" % tid()) for _ in range(6)])
        await asyncio.gather(*[s.wait_end(3) for s in sessions])
        got = [(s.code, s.reason) for s in sessions]
        check("closes seen by the 6 clients", got, [(4000, "range")] * 6)
        times = [s.since_start(s.closed_at) for s in sessions]
        for t in times:
            check_between("close after connect, one of 6 sessions", t, 0.2, 0.7)
        check_true("the draws differ: spread of the 6 close times >= 50ms", max(times) - min(times) >= 0.05,
                   [ms(t) for t in times])
        return "closed at " + ", ".join(ms(t) for t in sorted(times))
    add('trigger after = "200ms..600ms": each session drawn in the range', after_range)

    async def after_messages():
        p = await P.start("proxy-after-messages", [
            {"name": "third", "after_messages": 3, "direction": "client", "action": "close", "code": 4000,
             "reason": "three"},
        ], upstream=up_url)
        i = tid()
        s = await Sess.open(p.url + "/echo?id=%s" % i)
        await s.echo("m1")
        await s.echo("m2")
        await s.ws.send("m3")
        await s.wait_end()
        check("close seen by the client", (s.code, s.reason), (4000, "three"))
        echoes = s.texts()
        check_true("echoes received: m1, m2 and maybe m3", echoes in (["m1", "m2"], ["m1", "m2", "m3"]), echoes)
        await up_closed(up, i)
        check("messages the upstream received", up_msgs(up, i), ["m1", "m2", "m3"])
        return "echoes %s" % echoes
    add('trigger after_messages = 3, direction = "client": right after the 3rd client message', after_messages)

    async def after_messages_fragments():
        p = await P.start("proxy-after-messages-frag", [
            {"name": "third", "after_messages": 3, "direction": "client", "action": "close", "code": 4000,
             "reason": "three"},
        ], upstream=up_url)
        i = tid()
        s = await Sess.open(p.url + "/echo?id=%s" % i)
        waiters = []

        async def fragments():
            yield "frag-1 "
            waiters.append(await s.ws.ping(b"between"))
            yield "frag-2 "
            waiters.append(await s.ws.ping(b"between again"))
            yield "frag-3"

        await s.ws.send(fragments())
        await s.wait_msg(lambda d: d == "frag-1 frag-2 frag-3")
        await asyncio.wait_for(asyncio.gather(*waiters), 5)
        await s.echo("m2")
        await s.ws.send("m3")
        await s.wait_end()
        check("close seen by the client", (s.code, s.reason), (4000, "three"))
        await up_closed(up, i)
        check("messages the upstream received", up_msgs(up, i), ["frag-1 frag-2 frag-3", "m2", "m3"])
    add("trigger after_messages = 3 counts whole messages: 3 fragments and 2 pings are not 5 messages",
        after_messages_fragments)

    async def after_bytes():
        p = await P.start("proxy-after-bytes", [
            {"name": "kib", "after_bytes": "1KiB", "direction": "client", "action": "close", "code": 4000,
             "reason": "1KiB"},
        ], upstream=up_url)
        i = tid()
        s = await Sess.open(p.url + "/echo?id=%s" % i)
        chunks = [bytes([0x41 + n]) * 400 for n in range(4)]
        for c in chunks[:2]:
            await s.ws.send(c)
            await s.wait_msg(lambda d, c=c: d == c)
        await s.ws.send(chunks[2])  # 1200 bytes in all: crosses 1024
        await s.wait_end()
        check("close seen by the client", (s.code, s.reason), (4000, "1KiB"))
        await up_closed(up, i)
        check("sizes of the messages the upstream received", [len(d) // 2 for d in up_msgs(up, i)],
              [400, 400, 400])
    add('trigger after_bytes = "1KiB": after the client message that crosses 1024 bytes', after_bytes)

    async def on_message():
        p = await P.start("proxy-on-message", [
            {"name": "poison", "on_message": "crash", "direction": "client", "action": "close", "code": 1011,
             "reason": "internal error"},
        ], upstream=up_url)
        i = tid()
        s = await Sess.open(p.url + "/echo?id=%s" % i)
        await s.echo("hello")
        await s.ws.send("please crash now")
        await s.wait_end()
        check("close seen by the client", (s.code, s.reason), (1011, "internal error"))
        check("messages received by the client", s.texts(), ["hello"])
        ev = await up_closed(up, i)
        check("messages the upstream received (the matching one is not delivered)", up_msgs(up, i), ["hello"])
        check("close code seen by the upstream", ev["code"], 1001)
    add('trigger on_message = "crash": the message is not delivered, the session is closed', on_message)

    async def fragmented(parts, ping_data, rules, then=None):
        """Sends parts as one fragmented client message with a ping after the
        first fragment (and then a message `then`); returns the session and
        its id once it ended or 1s passed."""
        p = await P.start("proxy-fragments", rules, upstream=up_url)
        i = tid()
        s = await Sess.open(p.url + "/echo?id=%s" % i)
        waiters = []

        async def frags():
            for n, x in enumerate(parts):
                yield x
                if n == 0:
                    waiters.append(await s.ws.ping(ping_data))

        try:
            await s.ws.send(frags())
            if then is not None:
                try:
                    await s.wait_msg(lambda d: d == "".join(parts), 2)
                except Fail:
                    pass  # ended or no echo: what was seen is checked by the caller
                else:
                    await s.ws.send(then)
            await asyncio.wait_for(asyncio.shield(s.ended.wait()), 1.0)
        except (asyncio.TimeoutError, websockets.exceptions.ConnectionClosed):
            pass
        await asyncio.sleep(0.1)
        for w in waiters:
            if w.done() and not w.cancelled():
                w.exception()
            else:
                w.cancel()
        return s, i

    poison = {"name": "poison", "on_message": "crash", "direction": "client", "action": "close", "code": 4000,
              "reason": "poison"}

    def pings_up(i):
        return [bytes.fromhex(e["data"]).decode() for e in up.snapshot() if event_for("ping", i)(e)]

    async def on_message_fragments_match():
        s, i = await fragmented(["cr", "ash"], b"mid", [poison])
        try:
            got = {"client": (s.code, s.reason) if s.ended.is_set() else "open", "echoes": s.texts(),
                   "upstream messages": up_msgs(up, i), "upstream pings": pings_up(i)}
            check("fragments 'cr' + 'ash' with ping 'mid' between: what client and upstream saw", got,
                  {"client": (4000, "poison"), "echoes": [], "upstream messages": [], "upstream pings": ["mid"]})
        finally:
            await s.abort()
    add('trigger on_message = "crash" on a fragmented message "cr"+"ash" with a ping between its fragments: '
        'not delivered, closed; the ping relayed', on_message_fragments_match)

    async def on_message_fragments_no_match():
        s, i = await fragmented(["he", "llo"], b"crash", [poison])
        try:
            got = {"client": (s.code, s.reason) if s.ended.is_set() else "open", "echoes": s.texts(),
                   "upstream messages": up_msgs(up, i), "upstream pings": pings_up(i)}
            check("fragments 'he' + 'llo' with ping 'crash' between: what client and upstream saw", got,
                  {"client": "open", "echoes": ["hello"], "upstream messages": ["hello"],
                   "upstream pings": ["crash"]})
        finally:
            await s.abort()
    add('trigger on_message = "crash" looks at the message, not at a ping between its fragments: "he"+"llo" '
        'with ping "crash" is delivered', on_message_fragments_no_match)

    async def on_message_fragments_counting():
        two = {"name": "two", "after_messages": 2, "direction": "client", "action": "close", "code": 4001,
               "reason": "two"}
        s, i = await fragmented(["ab", "cd"], b"mid", [poison, two], then="next")
        try:
            await s.wait_end(2)
            got = {"client": (s.code, s.reason), "upstream messages": up_msgs(up, i)}
            check("after_messages = 2 beside an on_message rule; 'ab'+'cd' with a ping between, then 'next'",
                  got, {"client": (4001, "two"), "upstream messages": ["abcd", "next"]})
        finally:
            await s.abort()
    add("trigger after_messages = 2 beside an on_message rule: a ping between fragments is not a message",
        on_message_fragments_counting)

    async def every():
        p = await P.start("proxy-every", [
            {"name": "tick", "every": "500ms", "action": "close", "code": 1012, "reason": "rolling restart"},
        ], upstream=up_url)
        probe = await Sess.open(p.url + "/echo?id=%s" % tid())
        await probe.wait_end(2)
        check("close seen by the probe session", (probe.code, probe.reason), (1012, "rolling restart"))
        tick1 = probe.closed_at
        sessions = await asyncio.gather(*[Sess.open(p.url + "/echo?id=%s" % tid()) for _ in range(4)])
        opened_late = max(s.opened for s in sessions) - tick1
        await asyncio.gather(*[s.wait_end(2) for s in sessions])
        check("closes seen by the 4 sessions opened after the probe's tick",
              [(s.code, s.reason) for s in sessions], [(1012, "rolling restart")] * 4)
        closes = [s.closed_at for s in sessions]
        check_true("the 4 closes at the same tick: spread < 100ms", max(closes) - min(closes) < 0.1,
                   [ms(c - tick1) for c in closes])
        check_between("the 4 sessions' tick after the probe's tick", min(closes) - tick1, 0.4, 0.6)
        ticked = [e.get("sessions") for e in await p.wait_log(lambda e: e.get("msg") == "clock ticked", 2)]
        check("sessions per tick in the proxy log", ticked[:2], [1, 4])
        return "all 4 opened within %s of the tick, closed %s..%s later" % (
            ms(opened_late), ms(min(closes) - tick1), ms(max(closes) - tick1))
    add('trigger every = "500ms": every open session gets the close at the same tick', every)

    async def probability():
        p = await P.start("proxy-probability", [
            {"name": "never", "match": {"path": "/never"}, "on": "connect", "probability": 0.0,
             "action": "close", "code": 4000, "reason": "never"},
            {"name": "always", "match": {"path": "/always"}, "on": "connect", "probability": 1.0,
             "action": "close", "code": 4001, "reason": "always"},
        ], upstream=up_url)
        never = await asyncio.gather(*[Sess.open(p.url + "/never?id=%s" % tid()) for _ in range(5)])
        always = await asyncio.gather(*[Sess.open(p.url + "/always?id=%s" % tid()) for _ in range(5)])
        try:
            await asyncio.gather(*[s.wait_end(3) for s in always])
            check("closes seen with probability = 1", [(s.code, s.reason) for s in always], [(4001, "always")] * 5)
            await asyncio.sleep(0.3)
            check("sessions ended with probability = 0", [s.outcome() for s in never if s.ended.is_set()], [])
            for n, s in enumerate(never):
                await s.echo("still here %d" % n)
        finally:
            for s in never:
                await s.close()
        always_lines = await wait_faults(p, "always", 5)
        check("fault fired lines per rule", (len(faults(p, "never")), len(always_lines)), (0, 5))
    add("probability = 0 never fires, probability = 1 always (5 sessions each)", probability)

    async def limit():
        p = await P.start("proxy-limit", [
            {"name": "twice", "on": "connect", "limit": 2, "action": "close", "code": 4000, "reason": "limited"},
        ], upstream=up_url)
        got = []
        for n in range(5):
            s = await Sess.open(p.url + "/echo?id=%s" % tid())
            try:
                await s.ws.send("probe")
            except websockets.exceptions.ConnectionClosed:
                pass
            try:
                await s.wait_msg(lambda d: d == "probe", 2)
                got.append("echo")
            except Fail:
                await s.wait_end(2)
                got.append((s.code, s.reason))
            await s.close()
        check("sessions 1-5 in order", got, [(4000, "limited"), (4000, "limited"), "echo", "echo", "echo"])
    add("limit = 2: only the first two of five sessions are hit", limit)

    async def match():
        p = await P.start("proxy-match", [
            {"name": "m-path", "match": {"path": "/chat/*"}, "on": "connect", "action": "close", "code": 4001,
             "reason": "path"},
            {"name": "m-query", "match": {"query": {"room": "a*"}}, "on": "connect", "action": "close",
             "code": 4002, "reason": "query"},
            {"name": "m-header", "match": {"header": {"X-Tenant": "acme"}}, "on": "connect", "action": "close",
             "code": 4003, "reason": "header"},
            {"name": "m-subprotocol", "match": {"subprotocol": "graphql-*"}, "on": "connect", "action": "close",
             "code": 4004, "reason": "subprotocol"},
            {"name": "m-client", "match": {"client": "127.0.0.1", "path": "/from-loopback"}, "on": "connect",
             "action": "close", "code": 4005, "reason": "client"},
            {"name": "m-client-other", "match": {"client": "10.0.0.0/8"}, "on": "connect", "action": "close",
             "code": 4006, "reason": "other network"},
        ], upstream="echo")
        cases = [
            # what, path, connect kwargs, expected close (None: untouched)
            ("path /chat/* matches /chat/a/b", "/chat/a/b", {}, (4001, "path")),
            ("path /chat/* does not match /chatroom", "/chatroom", {}, None),
            ("query room=a* matches room=abc", "/q?room=abc", {}, (4002, "query")),
            ("query room=a* does not match room=bac", "/q?room=bac", {}, None),
            ("header X-Tenant=acme matches x-tenant: acme", "/h", {"extra_headers": {"x-tenant": "acme"}},
             (4003, "header")),
            ("header X-Tenant=acme does not match X-Tenant: acme2", "/h",
             {"extra_headers": {"X-Tenant": "acme2"}}, None),
            ("subprotocol graphql-* matches graphql-ws", "/s", {"subprotocols": ["graphql-ws"]},
             (4004, "subprotocol")),
            ("subprotocol graphql-* does not match chat", "/s", {"subprotocols": ["chat"]}, None),
            ("client 127.0.0.1 matches a loopback client", "/from-loopback", {}, (4005, "client")),
            ("client 10.0.0.0/8 does not match a loopback client", "/elsewhere", {}, None),
        ]
        sessions = []
        try:
            for what, path, kw, want in cases:
                sep = "&" if "?" in path else "?"
                s = await Sess.open(p.url + path + sep + "id=%s" % tid(), **kw)
                sessions.append((what, s, want))
            await asyncio.sleep(0.3)
            got, wanted = [], []
            for what, s, want in sessions:
                if want is None:
                    if s.ended.is_set():
                        got.append((what, "ended: " + s.outcome()))
                    else:
                        await s.echo("untouched")
                        got.append((what, "open, echo ok"))
                    wanted.append((what, "open, echo ok"))
                else:
                    await s.wait_end(2)
                    got.append((what, (s.code, s.reason)))
                    wanted.append((what, want))
            for g, w in zip(got, wanted):
                check("session: " + g[0], g[1], w[1])
            check("fault fired lines of m-client-other", len(faults(p, "m-client-other")), 0)
        finally:
            for _, s, _ in sessions:
                await s.close()
    add("match on path, query, header, subprotocol and client: a non-matching session is untouched", match)
    return tests


# ---------------------------------------------------------------- determinism

def determinism_tests(env):
    P = env.proxies

    async def hits(seed, run):
        p = await P.start("proxy-seed-%d-run-%d" % (seed, run), [
            {"name": "coin", "on": "connect", "probability": 0.5, "action": "close", "code": 4000,
             "reason": "coin"},
        ], upstream="echo", seed=seed)
        out = []
        for n in range(1, 21):
            s = await Sess.open(p.url + "/echo?n=%d" % n)
            try:
                await s.ws.send("probe")
            except websockets.exceptions.ConnectionClosed:
                pass
            try:
                await s.wait_msg(lambda d: d == "probe", 2)
            except Fail:
                await s.wait_end(2)
                if (s.code, s.reason) != (4000, "coin"):
                    raise Fail("seed %d run %d session %d: got %s, want close 4000 'coin' or an echo" % (
                        seed, run, n, s.outcome()))
                out.append(n)
            await s.close()
        await asyncio.to_thread(p.stop)
        logged = sorted(f.get("session") for f in faults(p, "coin"))
        check("seed %d run %d: hit sessions seen by the client vs fault fired lines" % (seed, run),
              len(out), len(logged))
        check("seed %d run %d: seed in the fault fired lines" % (seed, run),
              sorted({f.get("seed") for f in faults(p, "coin")}), [seed] if out else [])
        return out

    async def fn():
        a = await hits(42, 1)
        b = await hits(42, 2)
        check("sessions hit with seed 42, second run vs first run", b, a)
        check_true("seed 42 hits some but not all of 20 sessions", 0 < len(a) < 20, a)
        c = await hits(7, 1)
        check_true("seed 7 hits a different set than seed 42", c != a, "seed 7 %s, seed 42 %s" % (c, a))
        return "seed 42: %s; seed 7: %s" % (a, c)
    return [("%s: determinism: seed = 42, probability = 0.5: same sessions hit in two runs, another seed "
             "differs" % LABEL, fn, 40)]


# ---------------------------------------------------------------- live reload

RELOAD_RULE = [{"name": "restart", "after": "300ms", "action": "close", "code": 1012, "reason": "reloaded"}]


def reload_tests(env):
    tests = []
    P = env.proxies

    def add(name, fn, timeout=20):
        tests.append(("%s: %s" % (LABEL, name), fn, timeout))

    def is_reload(e):
        return e.get("msg") == "rules reloaded"

    def mk(how):
        async def fn():
            path = kit.write_config("reload-" + how, [], seed=42)
            p = await P.start("proxy-reload-" + how, [], upstream="echo", config_path=path)
            s = await Sess.open(p.url + "/echo?id=%s" % tid())
            try:
                await s.echo("before the reload")
                await asyncio.sleep(0.5)  # the session is older than the rule's 300ms
                kit.replace_file(path, kit.config_text(RELOAD_RULE, seed=42))
                sent = time.monotonic()
                if how == "sighup":
                    p.send_signal(signal.SIGHUP)
                await s.wait_end(4)
                check("close seen by the open session", (s.code, s.reason), (1012, "reloaded"))
                lines = await p.wait_log(is_reload)
                check_true("a 'rules reloaded' line", len(lines) >= 1, lines)
                whys = [e.get("why") for e in lines]
                if how == "sighup":
                    check_true("a reload with why = SIGHUP", "SIGHUP" in whys, whys)
                    check_between("close after the SIGHUP (300ms from the reload)", s.closed_at - sent, 0.3, 0.55)
                else:
                    check("why of the reload", whys[0], "file changed")
                reload_ms = kit.parse_ts(lines[0]["ts"])
                close_wall = s.opened_wall + (s.closed_at - s.opened) * 1000
                lag = close_wall - reload_ms
                check_true("close about 300ms after the reload's log line (counted from the reload, "
                           "not from the session's start): 200..600ms", 200 <= lag <= 600, "%.0fms" % lag)
                return "closed %.0fms after the reload, session age %s" % (lag, ms(s.closed_at - s.opened))
            finally:
                await s.close()
        return fn
    add("live reload on a file change: a new after = 300ms rule closes an open session with 1012", mk("file"))
    add("live reload on SIGHUP: a new after = 300ms rule closes an open session with 1012", mk("sighup"))

    async def invalid():
        old = [{"name": "old", "on": "connect", "action": "close", "code": 4000, "reason": "old rule"}]
        path = kit.write_config("reload-invalid", old, seed=42)
        p = await P.start("proxy-reload-invalid", [], upstream="echo", config_path=path)
        s = await Sess.open(p.url + "/echo?id=%s" % tid())
        await s.wait_end(2)
        check("close before the reload", (s.code, s.reason), (4000, "old rule"))
        kit.replace_file(path, '[[rule]]\nname = "new"\nafter = "soon"\naction = "close"\ncode = 1006\n')
        errs = await p.wait_log(lambda e: e.get("msg") == "reload failed; the running rules stay", 2, 4)
        texts = [str(e.get("error", "")) for e in errs]
        want = ['%s:3: rule "new": after:' % path, '%s:5: rule "new": code:' % path]
        for w in want:
            check_true("a logged reload error starting %r" % w, any(t.startswith(w) for t in texts), texts)
        check("error lines logged", len(errs), 2)
        s2 = await Sess.open(p.url + "/echo?id=%s" % tid())
        await s2.wait_end(2)
        check("close of a new session after the failed reload (old rules kept)", (s2.code, s2.reason),
              (4000, "old rule"))
        check("'rules reloaded' lines", [e for e in p.log_lines() if is_reload(e)], [])
    add("live reload of an invalid file keeps the running rules and logs each error", invalid)

    async def keeps_state():
        once = {"name": "once", "on": "connect", "limit": 1, "action": "close", "code": 4000, "reason": "once"}
        fresh = {"name": "fresh", "on": "connect", "action": "close", "code": 4001, "reason": "fresh"}
        path = kit.write_config("reload-state", [once], seed=42)
        p = await P.start("proxy-reload-state", [], upstream="echo", config_path=path)
        s1 = await Sess.open(p.url + "/echo?id=%s" % tid())
        await s1.wait_end(2)
        check("close of session 1 (limit = 1)", (s1.code, s1.reason), (4000, "once"))
        old = await Sess.open(p.url + "/echo?id=%s" % tid())
        try:
            await old.echo("limit reached: untouched")
            kit.replace_file(path, kit.config_text([once, fresh], seed=42))
            lines = await p.wait_log(is_reload, 1, 4)
            check_true("a 'rules reloaded' line", lines, lines)
            await asyncio.sleep(0.2)
            await old.echo("an on-connect rule added later does not touch an open session")
            s2 = await Sess.open(p.url + "/echo?id=%s" % tid())
            await s2.wait_end(2)
            check("close of a session after the reload (unchanged 'once' keeps its used limit)",
                  (s2.code, s2.reason), (4001, "fresh"))
            check("fault fired lines (rule)", [f.get("rule") for f in await wait_faults(p, None, 2)],
                  ["once", "fresh"])
        finally:
            await old.close()
    add("live reload: an unchanged rule keeps its state (limit used), a new on-connect rule spares open sessions",
        keeps_state)
    return tests


# ---------------------------------------------------------------- validate

VALID_RULES = [
    {"name": "deploy-restart", "match": {"path": "/chat/*", "header": {"X-Tenant": "acme"}}, "after": "30s",
     "probability": 0.5, "limit": 10, "action": "close", "code": "service_restart", "reason": "service restart"},
    {"name": "overloaded", "on": "connect", "action": "reject", "status": 503, "retry_after": 5},
    {"name": "crash", "after": "10s..30s", "action": "reset"},
    {"name": "lb-drop", "after_messages": 100, "direction": "client", "action": "drop"},
    {"name": "poison", "on_message": "crash", "direction": "client", "action": "close", "code": 1011},
    {"name": "rolling", "every": "5m", "action": "close", "code": "going_away"},
    {"name": "black-hole", "after": "60s", "action": "hang", "duration": "20s"},
    {"name": "slow", "on": "connect", "action": "delay", "direction": "upstream", "latency": "200ms"},
    {"name": "no-status", "after_bytes": "1MiB", "action": "close", "code": "none"},
]

INVALID_TEXT = """\
[proxy]
seed = 1

[[rule]]
name = "bad-code"
after = "1s"
action = "close"
code = 1006

[[rule]]
name = "two-triggers"
after = "1s"
every = "5s"
action = "reset"

[[rule]]
name = "bad-prob"
on = "connect"
probability = 1.5
action = "close"
code = 4000

[[rule]]
name = "bad-action"
on = "connect"
action = "explode"

[[rule]]
name = "bad-direction"
after_messages = 3
direction = "sideways"
action = "drop"
"""
# (line, rule, key) of each error INVALID_TEXT must produce
INVALID_WANT = [
    (8, "bad-code", "code"),
    (13, "two-triggers", "every"),
    (19, "bad-prob", "probability"),
    (26, "bad-action", "action"),
    (31, "bad-direction", "direction"),
]


def validate_tests(env):
    def run(path):
        r = subprocess.run([env.bin, "validate", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=20)
        return r.returncode, r.stdout.decode(), r.stderr.decode()

    async def valid():
        path = kit.write_config("validate-ok", VALID_RULES, seed=42)
        rc, out, err = await asyncio.to_thread(run, path)
        lines = out.splitlines()
        check("exit code (stderr %s)" % harness.short(err), rc, 0)
        check("first line", lines[:1], ["%s: valid, %d rules" % (path, len(VALID_RULES))])
        check("rule lines (name prefix, in file order)",
              [ln.split(":", 1)[0] for ln in lines[1:]], ["  " + r["name"] for r in VALID_RULES])
        details = {
            "deploy-restart": ["after 30s", "probability 0.5", "10", "1012", "service restart"],
            "overloaded": ["on connect", "reject", "503", "5"],
            "poison": ["crash", "1011"],
            "no-status": ["1005"],
        }
        for ln in lines[1:]:
            name = ln.strip().split(":", 1)[0]
            for word in details.get(name, []):
                check_true("rule line of %s mentions %r" % (name, word), word in ln, ln)

    async def invalid():
        path = kit.write_config("validate-bad", [], text=INVALID_TEXT)
        rc, out, err = await asyncio.to_thread(run, path)
        lines = out.splitlines()
        check("exit code (stderr %s)" % harness.short(err), rc, 1)
        pat = re.compile(r'^(?P<file>.+?):(?P<line>\d+): rule "(?P<rule>[^"]+)": (?P<key>[a-z_.\[\]]+): \S')
        got = []
        for ln in lines[:-1]:
            m = pat.match(ln)
            if not m or m.group("file") != path:
                raise Fail("error line: got %r, want 'FILE:LINE: rule \"NAME\": KEY: why'" % ln)
            got.append((int(m.group("line")), m.group("rule"), m.group("key")))
        check("errors (line, rule, key)", sorted(got), sorted(INVALID_WANT))
        check("last line", lines[-1:], ["%s: %d errors" % (path, len(INVALID_WANT))])

    return [
        ("%s: wschaos validate: a valid file exits 0 with one line per rule" % LABEL, valid, 20),
        ("%s: wschaos validate: a file with 5 errors exits 1 with file:line, rule and key for each" % LABEL,
         invalid, 20),
    ]


# ---------------------------------------------------------------- main

class Env:
    def __init__(self, binary, proxies, up, up_url):
        self.bin = binary
        self.proxies = proxies
        self.up = up
        self.up_url = up_url
        self.codes_proxy = None
        self.kill_proxy = None


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--filter", default="")
    args = ap.parse_args()
    r = harness.Runner(LABEL, float(os.environ.get("INTEROP_BUDGET", "80")))
    if websockets is None:
        r.fail_setup("import websockets", "the websockets package is not importable")
        r.summary()
        return 1
    up = None
    proxies = kit.Proxies(args.bin)
    try:
        up = harness.Proc([sys.executable, "-u", os.path.join(HERE, "rules_upstream.py"), "--lifetime", "300"],
                          "py-rules-upstream")
        port = await asyncio.to_thread(up.wait_listening)
        env = Env(args.bin, proxies, up, "ws://127.0.0.1:%d" % port)
        tests = (action_tests(env) + trigger_tests(env) + determinism_tests(env) + reload_tests(env)
                 + validate_tests(env))
        for name, fn, timeout in tests:
            if args.filter and args.filter not in name:
                continue
            await r.run(name, fn, timeout)
    except Exception as exc:  # noqa: BLE001
        r.fail_setup("suite setup", "%s: %s" % (type(exc).__name__, exc))
    finally:
        await proxies.stop_all()
        if up is not None:
            up.stop()
        harness.kill_children()
    return harness.finish(r)


if __name__ == "__main__":
    harness.run_suite(main)
