"""Process management and a tiny test runner shared by the Python suite."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse

LOG_DIR = os.environ.get("INTEROP_LOG_DIR") or os.path.join("/tmp", "wschaos-interop-logs-%d" % os.getpid())
os.makedirs(LOG_DIR, exist_ok=True)

_children = []


def kill_children():
    for p in list(_children):
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def run_suite(main):
    """Runs the suite's coroutine function main and exits with its return
    code, killing every child process on the way out and on SIGTERM."""
    def on_term(signum, frame):
        kill_children()
        os._exit(1)

    signal.signal(signal.SIGTERM, on_term)
    try:
        rc = asyncio.run(main())
    finally:
        kill_children()
    sys.stdout.flush()
    os._exit(rc)


def finish(r):
    """Prints where the logs are and the runner's summary, and returns the
    suite's exit code."""
    print("logs: %s" % LOG_DIR)
    r.summary()
    return 1 if r.failed else 0


class Proc:
    """A child process that reports JSON events on stdout, one per line."""

    def __init__(self, argv, name):
        self.name = name
        self.log_path = os.path.join(LOG_DIR, name + ".stderr.log")
        self._stderr = open(self.log_path, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self._stderr)
        _children.append(self.p)
        self.events = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        events_log = open(os.path.join(LOG_DIR, self.name + ".events.log"), "wb")
        for line in self.p.stdout:
            events_log.write(line)
            events_log.flush()
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "unparsed", "line": line.decode("utf-8", "replace")}
            with self._lock:
                self.events.append(ev)

    def snapshot(self):
        with self._lock:
            return list(self.events)

    def find(self, pred):
        for ev in self.snapshot():
            if pred(ev):
                return ev
        return None

    async def wait_event(self, pred, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            ev = self.find(pred)
            if ev is not None or time.monotonic() >= deadline:
                return ev
            await asyncio.sleep(0.02)

    def wait_listening(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ev = self.find(lambda e: e.get("event") == "listening")
            if ev:
                return ev["port"]
            if self.p.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError("%s did not start (exit=%s); see %s" % (self.name, self.p.poll(), self.log_path))

    def stop(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            try:
                self.p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)


def event_for(kind, tid):
    """Predicate: event of the given kind whose request path carries id=tid."""
    def pred(ev):
        if ev.get("event") != kind:
            return False
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(ev.get("path", "")).query)
        return q.get("id") == [tid]
    return pred


class Proxy:
    """The wschaos binary under test."""

    _n = 0

    def __init__(self, binary, upstream, name=None, extra=()):
        Proxy._n += 1
        self.name = name or "proxy-%d" % Proxy._n
        self.log_path = os.path.join(LOG_DIR, self.name + ".log")
        self._log = open(self.log_path, "w")
        self.argv = [binary, "run", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--upstream", upstream,
                     "--log-format", "json", *extra]
        self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                  stderr=subprocess.PIPE)
        _children.append(self.p)
        self.url = None
        self.port = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.p.stderr:
            line = raw.decode("utf-8", "replace")
            self._log.write(line)
            self._log.flush()
            if self.url is None:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if isinstance(ev, dict) and ev.get("msg") == "listening" and ev.get("url"):
                    self.url = ev["url"].rstrip("/")
                    self.port = urllib.parse.urlsplit(self.url).port
                    self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout=15.0):
        self._ready.wait(timeout)
        if self.url is None:
            raise RuntimeError("proxy %s did not report a listening url (exit=%s); argv=%s; log %s" % (
                self.name, self.p.poll(), " ".join(self.argv), self.log_path))
        return self

    def http_url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def log_lines(self):
        """The proxy's JSON log lines so far, parsed (other lines skipped)."""
        out = []
        with open(self.log_path, "r", encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if isinstance(ev, dict):
                    out.append(ev)
        return out

    async def wait_log(self, pred, count=1, timeout=2.0):
        """The log lines for which pred is true, once there are at least count
        of them or timeout seconds have passed. The proxy writes a line a
        moment after what it records (the client may see a close first), and
        a thread copies its output to the file: a check of a line waits here."""
        deadline = time.monotonic() + timeout
        while True:
            got = [e for e in self.log_lines() if pred(e)]
            if len(got) >= count or time.monotonic() >= deadline:
                return got
            await asyncio.sleep(0.02)

    def send_signal(self, sig):
        if self.p.poll() is None:
            self.p.send_signal(sig)

    def terminate(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)


async def start_proxy(binary, upstream, name=None, extra=()):
    proxy = Proxy(binary, upstream, name, extra)
    return await asyncio.to_thread(proxy.wait_ready)


class Fail(Exception):
    pass


class Skip(Exception):
    pass


def short(v, limit=200):
    r = repr(v)
    if len(r) > limit:
        r = r[:limit] + "...(%d chars)" % len(r)
    return r


def check(what, got, want):
    if got != want:
        raise Fail("%s: got %s, want %s" % (what, short(got), short(want)))


def check_true(what, cond, got):
    if not cond:
        raise Fail("%s: got %s" % (what, short(got)))


def check_payload(what, got, want):
    if type(got) is not type(want):
        raise Fail("%s: got a %s message (%d), want a %s message (%d)" % (
            what, type(got).__name__, len(got), type(want).__name__, len(want)))
    if got != want:
        i = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise Fail("%s: got %d units, want %d units; first difference at index %d (got %s, want %s)" % (
            what, len(got), len(want), i, short(got[i:i + 16]), short(want[i:i + 16])))


class Runner:
    def __init__(self, label, budget=80.0):
        self.label = label
        self.budget = budget
        self.deadline = time.monotonic() + budget
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.failures = []

    async def run(self, name, fn, timeout=30.0):
        t0 = time.monotonic()
        remaining = self.deadline - t0
        if remaining <= 1:
            self._fail(name, "not run: the suite's time budget of %.0fs is exhausted" % self.budget)
            return
        timeout = min(timeout, remaining)
        try:
            note = await asyncio.wait_for(fn(), timeout)
        except Skip as exc:
            self.skipped += 1
            print("SKIP %s: %s" % (name, exc), flush=True)
            return
        except Fail as exc:
            self._fail(name, str(exc))
            return
        except asyncio.TimeoutError:
            self._fail(name, "timed out after %.0fs" % timeout)
            return
        except Exception as exc:  # noqa: BLE001
            tb = traceback.format_exc(limit=3).strip().splitlines()
            self._fail(name, "unexpected %s: %s [%s]" % (type(exc).__name__, exc, tb[-3] if len(tb) >= 3 else ""))
            return
        self.passed += 1
        extra = (" (%s)" % note) if note else ""
        print("PASS %s [%.2fs]%s" % (name, time.monotonic() - t0, extra), flush=True)

    def _fail(self, name, msg):
        self.failed += 1
        self.failures.append(name)
        print("FAIL %s\n     %s" % (name, msg), flush=True)

    def fail_setup(self, name, msg):
        self._fail(name, msg)

    def summary(self):
        if self.failures:
            print("%s failures:" % self.label)
            for f in self.failures:
                print("  - " + f)
        if self.skipped:
            print("%s skipped: %d" % (self.label, self.skipped))
        print("%s: %d passed, %d failed" % (self.label, self.passed, self.failed), flush=True)
        sys.stdout.flush()
