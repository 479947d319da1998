"""Many clients and misbehaving ones: 100 WebSocket + 100 SSE clients all get every event in
order; a silent client still gets pushes at once; a client that stops answering pings is dropped;
a client that stops reading is closed without slowing anyone else."""

import asyncio
import contextlib
import json
import signal
import time

import pytest
from websockets.exceptions import ConnectionClosed

from conftest import (TIMEOUT, RawWebSocket, close_code, in_thread, next_live_event, opened,
                      request, run, subscribe, wait_until, ws_connect)

WS_GAUGE = 'porchlight_clients{kind="websocket"}'


async def sse_ids(server, ready, count):
    """An SSE client: signals `ready` once subscribed, then returns the first `count` ids."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(f"GET /stream/events HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    await writer.drain()
    ids = []
    try:
        while len(ids) < count:
            line = await reader.readline()
            assert line, "the SSE stream ended"
            if line.startswith(b"event: connected"):
                ready.set()
            elif line.startswith(b"id: "):
                ids.append(int(line[4:]))
    finally:
        writer.close()
    return ids


async def ws_ids(server, ready, count):
    async with ws_connect(server, token=None, max_queue=None) as ws:
        await opened(ws)
        await subscribe(ws)
        ready.set()
        return [(await next_live_event(ws, timeout=60))["id"] for _ in range(count)]


def test_100_websocket_and_100_sse_clients_receive_every_event_in_order(make_server):
    # Every client here is 127.0.0.1: lift the per-address connection cap (default 32).
    s = make_server(config="max_connections_per_ip = 1000\n")
    clients, events = 100, 100

    async def body():
        ready = [asyncio.Event() for _ in range(2 * clients)]
        tasks = [asyncio.create_task(ws_ids(s, ready[i], events)) for i in range(clients)]
        tasks += [asyncio.create_task(sse_ids(s, ready[clients + i], events))
                  for i in range(clients)]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 60)
        assert s.metric(WS_GAUGE) == clients

        def publish():
            return [s.post_event("motion_detected", {"n": n})["id"] for n in range(events)]

        posted = await in_thread(publish)
        received = await asyncio.gather(*tasks)
        return posted, received

    posted, received = run(body(), timeout=120)
    assert len(posted) == events
    for i, ids in enumerate(received):
        kind = "WebSocket" if i < clients else "SSE"
        assert ids == posted, f"{kind} client {i % clients} got {ids[:5]}... not {posted[:5]}..."
    assert s.metric("porchlight_clients_evicted_total") == 0
    assert s.metric("porchlight_ws_events_sent_total") == clients * events


def test_a_silent_client_receives_pushes_promptly(make_server):
    # Long timeouts: a design that only pushes when a socket read times out would make each of
    # these events wait a minute.
    s = make_server("heartbeat_s = 60\nrequest_timeout_s = 60\n")

    async def body():
        # No keep-alive pings from the client library: after subscribing it sends nothing.
        async with ws_connect(s, token=None, ping_interval=None) as silent:
            await opened(silent)
            await subscribe(silent, ["doorbell_pressed"])
            delays = []
            for _ in range(5):
                started = time.monotonic()
                ring = await in_thread(s.post_event, "doorbell_pressed")
                assert await next_live_event(silent) == ring
                delays.append(time.monotonic() - started)
            return delays

    delays = run(body())
    assert max(delays) < 2.0, delays


def test_an_unresponsive_client_is_dropped_and_a_responsive_one_stays(make_server):
    s = make_server("heartbeat_s = 1\n")
    raw = RawWebSocket(s, token=None)

    def frames_until_closed():
        """Reads the raw client's frames, never answering a ping, until the server closes."""
        seen = []
        try:
            while True:
                seen.append(raw.read_frame())
        except (EOFError, ConnectionResetError):
            return seen

    async def body():
        async with ws_connect(s, token=None) as alive:  # the library answers pings
            await opened(alive)
            seen = await in_thread(frames_until_closed)
            opcodes = [opcode for opcode, _ in seen]
            assert opcodes[0] == 0x1  # connected
            assert 0x9 in opcodes, opcodes  # pinged first...
            closes = [payload for opcode, payload in seen if opcode == 0x8]
            if closes:  # ...then told why, if the socket still took it
                assert close_code(closes[0]) == 1011
            # Several heartbeats later the answering client is still served.
            assert (await request(alive, {"type": "ping"}))["type"] == "pong"

    try:
        run(body())
    finally:
        raw.close()
    assert s.wait_for_log(r"disconnected: unresponsive")


def test_a_client_that_stops_reading_is_closed_without_affecting_others(make_server):
    s = make_server("client_queue_events = 8\n")
    # A small receive buffer so that the stalled client's socket fills quickly.
    stalled = RawWebSocket(s, token=None, rcvbuf=4096)
    assert stalled.read_json()["type"] == "connected"
    stalled.send_text('{"type": "subscribe", "event_types": ["*"]}')
    assert stalled.read_json()["type"] == "subscribed"
    # From here on `stalled` reads nothing.
    padding = "x" * 12000

    async def body():
        async with ws_connect(s, token=None, max_queue=None) as healthy:
            await opened(healthy)
            await subscribe(healthy)
            received = []

            async def consume():
                while True:
                    received.append((await next_live_event(healthy))["id"])

            consumer = asyncio.create_task(consume())

            def publish_until_evicted():
                posted = []
                for n in range(3000):
                    posted.append(s.post_event("motion_detected", {"n": n, "pad": padding})["id"])
                    if n % 25 == 24 and s.metric("porchlight_clients_evicted_total") >= 1:
                        return posted
                raise AssertionError("the stalled client was never disconnected")

            posted = await in_thread(publish_until_evicted)
            # The healthy client got every event, in order, while the other one stalled.
            deadline = time.monotonic() + 30
            while len(received) < len(posted) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            assert received == posted
            assert (await request(healthy, {"type": "ping"}))["type"] == "pong"

    run(body(), timeout=120)
    # The stalled client's connection was closed: what was in flight drains, then EOF.
    stalled.sock.settimeout(TIMEOUT)
    try:
        while stalled.sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    stalled.close()
    wait_until(lambda: s.metric(WS_GAUGE) == 0, what="both clients to be gone")
    s.wait_for_log(r"WebSocket client ws-1 disconnected: fell behind")


def test_shutdown_closes_every_session_and_exits_cleanly(make_server):
    s = make_server()

    async def body():
        clients = [await ws_connect(s, token=None) for _ in range(3)]
        for ws in clients:
            await opened(ws)
        s.proc.send_signal(signal.SIGTERM)
        for ws in clients:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            # Streams get a moment to end themselves before sockets are cut: the close
            # frame always arrives and says why.
            assert closed.value.rcvd is not None, "the socket was cut without a close frame"
            assert closed.value.rcvd.code == 1001

    run(body())
    assert s.proc.wait(timeout=TIMEOUT) == 0
    s.wait_for_log(r"stopped cleanly")


def test_a_client_whose_queue_fills_is_closed_and_replays_the_rest_on_reconnect(make_server):
    # A client that stops reading, with a queue of one event: the event writer sends to its
    # socket until the socket is full, then hands it to its session, whose queue overflows at
    # the next event or two, and the client is evicted. (A client that reads as fast as events
    # come is never queued for at all: the writer sends to its socket directly.)
    s = make_server("client_queue_events = 1\n")
    stalled = RawWebSocket(s, token=None, rcvbuf=4096)
    assert stalled.read_json()["type"] == "connected"
    stalled.send_text('{"type": "subscribe", "event_types": ["*"]}')
    assert stalled.read_json()["type"] == "subscribed"
    padding = "x" * 12000
    posted = []
    for n in range(3000):
        posted.append(s.post_event("motion_detected", {"n": n, "pad": padding})["id"])
        if n % 25 == 24 and s.metric("porchlight_clients_evicted_total") >= 1:
            break
    else:
        raise AssertionError("the stalled client was never evicted")
    posted += [s.post_event("motion_detected", {"after": n})["id"] for n in range(5)]

    # Reading now: the events that were in flight, maybe a close frame that says where to
    # resume (when the session could still send it), then the end of the connection.
    got, close = [], None
    stalled.sock.settimeout(TIMEOUT)
    try:
        while True:
            opcode, payload = stalled.read_frame()
            if opcode == 0x8:
                close = payload
            elif opcode == 0x1 and json.loads(payload)["type"] == "live_event":
                got.append(json.loads(payload)["event"]["id"])
    except (EOFError, ConnectionResetError):
        pass
    finally:
        stalled.close()
    assert len(got) < len(posted), "the stalled client was never cut off"
    assert got == posted[:len(got)], "what arrived before the close has no gap"
    if close is not None:
        assert close_code(close) == 1013
        assert f"last_event_id={got[-1] if got else 0}" in close[2:].decode()

    async def body():
        # Reconnect where it stopped: the rest is replayed from the store.
        resume = got[-1] if got else posted[0] - 1
        async with ws_connect(s, f"?last_event_id={resume}", token=None) as ws:
            await opened(ws)
            await subscribe(ws)
            while len(got) < len(posted):
                got.append((await next_live_event(ws))["id"])
        assert got == posted

    run(body(), timeout=120)
