"""Harness for the WebSocket tests: start the real porchlight binary on a loopback port and talk
to it as a browser or a script would — WebSockets through the `websockets` library (a client that
is not ours), HTTP through `http.client`, Server-Sent Events over plain sockets.

Nothing here sleeps in place of a signal: the server is ready when it logs `listening on`, and
every wait has a timeout so that a hung server fails a test instead of hanging it.
"""

import asyncio
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("PORCHLIGHT_BIN", str(ROOT / "target" / "debug" / "porchlight"))

VIEWER = "viewer-token-0001"
CONTROL = "control-token-0002"
ADMIN = "admin-token-0003"
TOKEN_FLAGS = [
    "--token", f"viewer:{VIEWER}",
    "--token", f"control:{CONTROL}",
    "--token", f"admin:{ADMIN}",
]

# Longest any single exchange may take before a test fails.
TIMEOUT = 10.0


class Server:
    """One running porchlight, with its own data dir; stopped with SIGTERM on close()."""

    def __init__(self, config="", args=()):
        self.dir = Path(tempfile.mkdtemp(prefix="porchlight-ws-test-"))
        (self.dir / "porchlight.toml").write_text(config)
        self.proc = subprocess.Popen(
            [BIN, "--listen", "127.0.0.1:0", "--data-dir", str(self.dir / "data"),
             "--config", str(self.dir / "porchlight.toml"), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )
        self.log_lines = []
        self._stderr_closed = False
        self._log_cond = threading.Condition()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        line = self.wait_for_log(r"listening on http://127\.0\.0\.1:(\d+)", timeout=20)
        self.port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        self.origin = f"http://127.0.0.1:{self.port}"

    def _drain_stderr(self):
        for line in self.proc.stderr:
            with self._log_cond:
                self.log_lines.append(line.rstrip("\n"))
                self._log_cond.notify_all()
        with self._log_cond:
            self._stderr_closed = True
            self._log_cond.notify_all()

    def wait_for_log(self, pattern, timeout=TIMEOUT):
        """The first log line matching `pattern`, waiting for it to be written."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._log_cond:
            while True:
                for line in self.log_lines:
                    if regex.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self._stderr_closed:
                    raise AssertionError(
                        f"no log line matching {pattern!r}; log:\n" + "\n".join(self.log_lines))
                self._log_cond.wait(left)

    def ws_url(self, query=""):
        return f"ws://127.0.0.1:{self.port}/ws{query}"

    def request(self, method, path, body=None, headers=None, token=ADMIN):
        """One HTTP request; returns (status, headers, parsed JSON body or raw text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        headers = dict(headers or {})
        if token:
            headers.setdefault("Authorization", f"Bearer {token}")
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read().decode()
        conn.close()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw
        return response.status, dict(response.getheaders()), parsed

    def post_event(self, event_type="motion_detected", data=None, token=ADMIN):
        status, _, event = self.request(
            "POST", "/api/events", {"event_type": event_type, "data": data or {}}, token=token)
        assert status == 201, event
        return event

    def metric(self, name):
        status, _, text = self.request("GET", "/metrics")
        assert status == 200
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise AssertionError(f"no metric {name}")

    def close(self):
        if os.environ.get("PORCHLIGHT_TEST_SHOW_LOG"):
            print(f"\n---- server log ({self.origin}) ----\n" + "\n".join(self.log_lines))
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    """A server with viewer/control/admin tokens and one extra allowed origin."""
    s = Server(config='allowed_origins = ["http://door.local:8080"]\n', args=TOKEN_FLAGS)
    yield s
    s.close()


@pytest.fixture
def make_server():
    """Starts servers with a given config for one test; stops them after it."""
    started = []

    def make(config="", args=()):
        s = Server(config=config, args=args)
        started.append(s)
        return s

    yield make
    for s in started:
        s.close()


def wait_until(predicate, timeout=TIMEOUT, what="the condition"):
    """Polls an observable state (a metric, a counter) until `predicate` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def run(coro, timeout=60):
    """Runs one asyncio test body with an overall limit."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_connect(server, query="", token=ADMIN, **kwargs):
    """A `websockets` client connection (use with `async with`)."""
    headers = dict(kwargs.pop("additional_headers", {}))
    if token:
        headers["Authorization"] = f"Bearer {token}"
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", 2)
    return connect(server.ws_url(query), additional_headers=headers, **kwargs)


async def recv_json(ws, timeout=TIMEOUT):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def opened(ws):
    """Reads the `connected` message every session starts with."""
    hello = await recv_json(ws)
    assert hello["type"] == "connected", hello
    return hello


async def request(ws, message, timeout=TIMEOUT):
    """Sends one message and returns the next message received."""
    await ws.send(json.dumps(message))
    return await recv_json(ws, timeout)


async def subscribe(ws, types=("*",)):
    reply = await request(ws, {"type": "subscribe", "event_types": list(types)})
    assert reply == {"type": "subscribed", "event_types": list(types)}, reply


async def next_live_event(ws, timeout=TIMEOUT):
    message = await recv_json(ws, timeout)
    assert message["type"] == "live_event", message
    return message["event"]


def in_thread(fn, *args):
    """Runs blocking `fn` (e.g. an HTTP request) without blocking the event loop."""
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)


class RawWebSocket:
    """A deliberately minimal WebSocket client over a plain socket, for what a well-behaved
    library will not do: stay silent to pings, stop reading, send invalid frames."""

    def __init__(self, server, query="", token=ADMIN, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.sock.sendall(
            (f"GET /ws{query} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed during the handshake"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send_frame(self, opcode, payload, fin=True):
        mask = os.urandom(4)
        header = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_text(self, text):
        self.send_frame(0x1, text.encode())

    def _read_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_frame(self):
        """(opcode, payload) of the next frame; EOFError when the server closed the socket."""
        b0, b1 = self._read_exact(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read_exact(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read_exact(8))[0]
        return b0 & 0x0F, self._read_exact(n)

    def read_json(self):
        opcode, payload = self.read_frame()
        assert opcode == 0x1, (opcode, payload)
        return json.loads(payload)

    def close(self):
        self.sock.close()


def close_code(payload):
    return struct.unpack(">H", payload[:2])[0]
