"""A hand-written upstream WebSocket server on plain sockets.

It answers every upgrade with 101 (no extension, no subprotocol) and then
behaves according to the request path:

  .../rst        waits for one frame from the client, then resets the TCP
                 connection (SO_LINGER 0).
  .../viol/NAME  waits for one frame from the client, sends the protocol
                 violation NAME (see wsraw.VIOLATIONS), then reads until a
                 close frame and reports it.
  .../fragsend   waits for one frame from the client, then sends a text
                 message "abcdef" as three fragments with a ping "raw-ping"
                 after the first, and reports the pong it gets back.
  anything else  waits for a close frame and answers it.

Events are JSON lines on stdout; the first one is {"event": "listening",
"port": N}. The server exits when stdin reaches EOF or after --lifetime
seconds.
"""

import argparse
import json
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsraw  # noqa: E402

_out_lock = threading.Lock()


def emit(**event):
    with _out_lock:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def handle(sock):
    conn = wsraw.Conn(sock)
    path = "?"
    try:
        path, _headers = wsraw.server_handshake(conn)
        segments = [s for s in urllib.parse.urlsplit(path).path.split("/") if s]
        emit(event="open", path=path)
        if segments and segments[-1] == "rst":
            try:
                f = conn.read_frame(time.monotonic() + 5)
                got = f.opcode
            except Exception as exc:  # noqa: BLE001
                got = "error: %s" % exc
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            emit(event="rst", path=path, got_frame=got)
            return
        if len(segments) >= 2 and segments[-2] == "viol":
            name = segments[-1]
            try:
                first = conn.read_frame(time.monotonic() + 5)
                first_desc = first.opcode
            except Exception as exc:  # noqa: BLE001
                emit(event="result", path=path, violation=name, close_code=None,
                     reason="", ended="no first frame: %s" % exc, before=[])
                return
            conn.send(wsraw.violation_bytes(name, "server"))
            res = conn.wait_close(timeout=5)
            emit(event="result", path=path, violation=name, first_frame=first_desc, **res)
            if res["ended"] == "close":
                try:
                    conn.send(wsraw.build_frame(wsraw.OP_CLOSE, wsraw.close_payload(res["close_code"] or 1000)))
                except OSError:
                    pass
            return
        if segments and segments[-1] == "fragsend":
            conn.read_frame(time.monotonic() + 5)
            conn.send(wsraw.build_frame(wsraw.OP_TEXT, b"ab", fin=False)
                      + wsraw.build_frame(wsraw.OP_PING, b"raw-ping")
                      + wsraw.build_frame(wsraw.OP_CONT, b"cd", fin=False)
                      + wsraw.build_frame(wsraw.OP_CONT, b"ef", fin=True))
            deadline = time.monotonic() + 5
            pong, before = None, []
            for _ in range(100):
                f = conn.read_frame(deadline)
                if f.opcode == wsraw.OP_PONG:
                    pong = f
                    break
                before.append(f.opcode)
            emit(event="fragsend", path=path, pong=pong.payload.hex() if pong else None,
                 pong_masked=pong.masked if pong else None, before=before)
        res = conn.wait_close(timeout=10)
        emit(event="closed", path=path, code=res["close_code"], reason=res["reason"], ended=res["ended"])
        if res["ended"] == "close":
            try:
                conn.send(wsraw.build_frame(wsraw.OP_CLOSE, wsraw.close_payload(res["close_code"] or 1000)))
            except OSError:
                pass
    except Exception as exc:  # noqa: BLE001
        emit(event="error", path=path, error=repr(exc))
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lifetime", type=float, default=600)
    args = ap.parse_args()

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.5)
    emit(event="listening", port=srv.getsockname()[1])

    stop = threading.Event()

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    end = time.monotonic() + args.lifetime
    while not stop.is_set() and time.monotonic() < end:
        try:
            sock, _ = srv.accept()
        except socket.timeout:
            continue
        threading.Thread(target=handle, args=(sock,), daemon=True).start()
    srv.close()


if __name__ == "__main__":
    main()
