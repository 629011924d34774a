"""What the `websockets` upstreams (upstream.py, rules_upstream.py) share:
events as JSON lines on stdout, the parts of a request path, and serving
until stdin reaches EOF or the lifetime ends."""

import asyncio
import json
import os
import sys
import urllib.parse


def emit(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def last_segment(path):
    segs = [s for s in urllib.parse.urlsplit(path).path.split("/") if s]
    return segs[-1] if segs else ""


def query(path):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query, keep_blank_values=True))


async def serve_until_eof(server, lifetime):
    """Keeps server up until stdin reaches EOF or lifetime seconds pass,
    then closes it (waiting at most 3 s)."""
    loop = asyncio.get_running_loop()
    eof = loop.run_in_executor(None, sys.stdin.buffer.read)
    try:
        await asyncio.wait_for(eof, timeout=lifetime)
    except asyncio.TimeoutError:
        pass
    server.close()
    try:
        await asyncio.wait_for(server.wait_closed(), 3)
    except asyncio.TimeoutError:
        pass


def run(main):
    """Runs the coroutine function main and exits the process."""
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()
    # The stdin reader thread may still be blocked; leave without joining it.
    os._exit(0)
