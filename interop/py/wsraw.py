"""Hand-written WebSocket framing over plain sockets (RFC 6455).

Used by the raw peers that send frames a conforming library would refuse to
produce (protocol violations, abrupt resets).
"""

import base64
import hashlib
import os
import socket
import struct
import time

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def accept_key(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def mask_bytes(payload, mask):
    if not payload:
        return b""
    n = len(payload)
    full = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(full, "big")).to_bytes(n, "big")


def build_frame(opcode, payload=b"", fin=True, rsv=0, mask=None):
    """Builds one frame. rsv is a 3-bit value (RSV1=4, RSV2=2, RSV3=1).
    mask is None (unmasked) or 4 bytes."""
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    mbit = 0x80 if mask is not None else 0
    n = len(payload)
    if n < 126:
        hdr = bytes([b0, mbit | n])
    elif n < 65536:
        hdr = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        hdr = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if mask is not None:
        hdr += mask
        payload = mask_bytes(payload, mask)
    return hdr + payload


def close_payload(code, reason=""):
    return struct.pack("!H", code) + reason.encode()


def parse_close(payload):
    if len(payload) < 2:
        return None, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")


class Frame:
    __slots__ = ("fin", "rsv", "opcode", "masked", "payload")

    def __init__(self, fin, rsv, opcode, masked, payload):
        self.fin, self.rsv, self.opcode, self.masked, self.payload = fin, rsv, opcode, masked, payload

    def __repr__(self):
        return "Frame(op=%d fin=%s rsv=%d masked=%s len=%d)" % (
            self.opcode, self.fin, self.rsv, self.masked, len(self.payload))


class Conn:
    """A socket with a read buffer and a hard deadline for every read."""

    def __init__(self, sock, buf=b""):
        self.sock = sock
        self.buf = buf

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("read deadline passed")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by peer")
        self.buf += chunk

    def read_exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_until(self, marker, deadline, limit=65536):
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise ValueError("header too long")
            self._fill(deadline)
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_frame(self, deadline):
        h = self.read_exact(2, deadline)
        fin = bool(h[0] & 0x80)
        rsv = (h[0] >> 4) & 7
        opcode = h[0] & 0xF
        masked = bool(h[1] & 0x80)
        n = h[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.read_exact(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.read_exact(8, deadline))[0]
        if n > (64 << 20):
            raise ValueError("frame too large: %d" % n)
        mask = self.read_exact(4, deadline) if masked else None
        payload = self.read_exact(n, deadline)
        if mask is not None:
            payload = mask_bytes(payload, mask)
        return Frame(fin, rsv, opcode, masked, payload)

    def send(self, data):
        self.sock.settimeout(5)
        self.sock.sendall(data)

    def wait_close(self, timeout=5.0, max_frames=1000):
        """Reads frames until a close frame. Returns a dict describing the
        outcome: close code and reason, or how the connection ended instead."""
        deadline = time.monotonic() + timeout
        seen = []
        for _ in range(max_frames):
            try:
                f = self.read_frame(deadline)
            except EOFError:
                return {"close_code": None, "reason": "", "ended": "eof", "before": seen}
            except ConnectionResetError:
                return {"close_code": None, "reason": "", "ended": "reset", "before": seen}
            except (TimeoutError, socket.timeout):
                return {"close_code": None, "reason": "", "ended": "timeout", "before": seen}
            if f.opcode == OP_CLOSE:
                code, reason = parse_close(f.payload)
                return {"close_code": code, "reason": reason, "ended": "close",
                        "masked": f.masked, "before": seen}
            seen.append(f.opcode)
        return {"close_code": None, "reason": "", "ended": "too-many-frames", "before": seen}

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def client_handshake(host, port, path, timeout=5.0, extra_headers=()):
    """Opens a TCP connection and performs the client side of the opening
    handshake. Returns (Conn, status, headers)."""
    deadline = time.monotonic() + timeout
    sock = socket.create_connection((host, port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET %s HTTP/1.1" % path,
        "Host: %s:%d" % (host, port),
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: %s" % key,
        "Sec-WebSocket-Version: 13",
    ]
    lines.extend(extra_headers)
    conn = Conn(sock)
    conn.send(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = conn.read_until(b"\r\n\r\n", deadline).decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    status = int(status_line.split()[1])
    headers = {}
    for line in header_lines:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if status == 101 and headers.get("sec-websocket-accept") != accept_key(key):
        raise ValueError("bad Sec-WebSocket-Accept: %r" % headers.get("sec-websocket-accept"))
    return conn, status, headers


def server_handshake(conn, timeout=5.0):
    """Reads an upgrade request from conn and answers 101 without any
    extension or subprotocol. Returns (path, headers)."""
    deadline = time.monotonic() + timeout
    head = conn.read_until(b"\r\n\r\n", deadline).decode("latin-1")
    request_line, *header_lines = head.split("\r\n")
    path = request_line.split()[1]
    headers = {}
    for line in header_lines:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    key = headers.get("sec-websocket-key", "")
    conn.send((
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: %s\r\n\r\n" % accept_key(key)).encode())
    return path, headers


def new_mask():
    m = os.urandom(4)
    # A zero mask leaves the payload as is; avoid it so masking is visible.
    return m if m != b"\0\0\0\0" else b"\x01\x02\x03\x04"


# Violations a peer can commit. Each entry: name -> (description, applies to
# client side, applies to server side, builder(mask_fn) -> bytes). The
# builder receives the mask to use for a conforming frame of that side
# (None for a server, 4 bytes for a client).
def _v_unmasked(mask):
    return build_frame(OP_TEXT, b"hello", mask=None)


def _v_masked_server(mask):
    return build_frame(OP_TEXT, b"hello", mask=b"\x11\x22\x33\x44")


def _v_frag_control(mask):
    return build_frame(OP_PING, b"frag", fin=False, mask=mask)


def _v_big_control(mask):
    return build_frame(OP_PING, b"p" * 126, mask=mask)


def _v_reserved_data_opcode(mask):
    return build_frame(0x3, b"hello", mask=mask)


def _v_reserved_control_opcode(mask):
    return build_frame(0xB, b"hello", mask=mask)


def _v_rsv1(mask):
    return build_frame(OP_TEXT, b"hello", rsv=4, mask=mask)


def _v_rsv2(mask):
    return build_frame(OP_TEXT, b"hello", rsv=2, mask=mask)


def _v_rsv3(mask):
    return build_frame(OP_TEXT, b"hello", rsv=1, mask=mask)


def _v_cont_without_start(mask):
    return build_frame(OP_CONT, b"hello", fin=True, mask=mask)


VIOLATIONS = {
    "unmasked-client-frame": (True, False, _v_unmasked),
    "masked-server-frame": (False, True, _v_masked_server),
    "fragmented-control": (True, True, _v_frag_control),
    "control-126-bytes": (True, True, _v_big_control),
    "reserved-data-opcode": (True, True, _v_reserved_data_opcode),
    "reserved-control-opcode": (True, True, _v_reserved_control_opcode),
    "rsv1-without-extension": (True, True, _v_rsv1),
    "rsv2-without-extension": (True, True, _v_rsv2),
    "rsv3-without-extension": (True, True, _v_rsv3),
    "continuation-without-start": (True, True, _v_cont_without_start),
}

CLIENT_VIOLATIONS = [k for k, v in VIOLATIONS.items() if v[0]]
SERVER_VIOLATIONS = [k for k, v in VIOLATIONS.items() if v[1]]


def violation_bytes(name, side):
    builder = VIOLATIONS[name][2]
    return builder(new_mask() if side == "client" else None)
