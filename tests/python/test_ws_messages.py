"""The messages of the contract: connected, subscribe/unsubscribe, live_event in id order with
replay, request_video_stream, ping, error codes, and the closes for binary and oversized
messages."""

import asyncio
import json
import re
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosedError

from conftest import (TIMEOUT, RawWebSocket, close_code, in_thread, next_live_event, opened,
                      recv_json, request, run, subscribe, ws_connect)


async def still_open(ws):
    """The connection still answers: the contract keeps it open after an `error`."""
    reply = await request(ws, {"type": "ping"})
    assert reply["type"] == "pong", reply


def test_connected_names_the_client_and_the_capabilities(server):
    async def body():
        async with ws_connect(server, "?client_id=front-door_1") as ws:
            hello = await opened(ws)
            assert hello["client_id"] == "front-door_1"
            assert {"subscribe", "replay", "system_command"} <= set(hello["server_capabilities"])
        async with ws_connect(server) as ws:
            hello = await opened(ws)
            assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", hello["client_id"])

    run(body())


def test_a_new_connection_receives_only_what_it_subscribes_to_in_id_order(server):
    async def body():
        async with ws_connect(server) as ws:
            await opened(ws)
            # Subscribed to nothing yet: this event is not sent.
            await in_thread(server.post_event, "doorbell_pressed")
            await subscribe(ws, ["doorbell_pressed"])
            motion = await in_thread(server.post_event, "motion_detected")
            ring = await in_thread(server.post_event, "doorbell_pressed")
            # Events travel in id order, so the next message being the ring proves the motion
            # event (and the one before subscribing) were not sent.
            got = await next_live_event(ws)
            assert got == ring and got["id"] > motion["id"]

            await subscribe(ws, ["*"])
            posted = [await in_thread(server.post_event, t)
                      for t in ("motion_detected", "face_recognized", "doorbell_pressed")]
            assert [await next_live_event(ws) for _ in posted] == posted

            reply = await request(ws, {"type": "unsubscribe", "event_types": ["motion_detected"]})
            assert reply == {"type": "unsubscribed", "event_types": ["motion_detected"]}
            await in_thread(server.post_event, "motion_detected")
            ring = await in_thread(server.post_event, "doorbell_pressed")
            assert await next_live_event(ws) == ring

            reply = await request(ws, {"type": "unsubscribe", "event_types": ["*"]})
            assert reply == {"type": "unsubscribed", "event_types": ["*"]}
            await in_thread(server.post_event, "doorbell_pressed")
            await subscribe(ws, ["system_alert"])
            alert = await in_thread(server.post_event, "system_alert")
            assert await next_live_event(ws) == alert

    run(body())


@pytest.mark.parametrize("message", [
    {"type": "subscribe"},
    {"type": "subscribe", "event_types": []},
    {"type": "subscribe", "event_types": "*"},
    {"type": "subscribe", "event_types": ["Not-A-Type"]},
    {"type": "unsubscribe", "event_types": [1]},
    {"type": "request_video_stream", "quality": "ultra"},
    {"type": "request_video_stream", "quality": 5},
])
def test_bad_params_get_an_error_and_the_connection_stays_open(server, message):
    async def body():
        async with ws_connect(server) as ws:
            await opened(ws)
            reply = await request(ws, message)
            assert reply["type"] == "error" and reply["code"] == "bad_params", reply
            assert reply["message"]
            await still_open(ws)

    run(body())


@pytest.mark.parametrize("text,code", [
    ("not json", "bad_json"),
    ("[1, 2]", "bad_json"),
    ("[" * 10000, "bad_json"),
    ("[" * 32 + "]" * 32, "bad_json"),
    ('{"type": "ping", "x": ' + "[" * 32 + "]" * 32 + "}", "bad_json"),
    ("{}", "unknown_type"),
    ('{"type": 7}', "unknown_type"),
    ('{"type": "launch_rocket"}', "unknown_type"),
])
def test_bad_messages_get_their_error_code_and_the_connection_stays_open(server, text, code):
    async def body():
        async with ws_connect(server) as ws:
            await opened(ws)
            await ws.send(text)
            reply = await recv_json(ws)
            assert reply["type"] == "error" and reply["code"] == code, reply
            assert reply["message"]
            await still_open(ws)

    run(body())


def test_nesting_up_to_32_levels_is_accepted(server):
    async def body():
        async with ws_connect(server) as ws:
            await opened(ws)
            deep = '{"type": "ping", "x": ' + "[" * 31 + "]" * 31 + "}"
            await ws.send(deep)
            assert (await recv_json(ws))["type"] == "pong"

    run(body())


def test_deeply_nested_json_in_a_rest_body_is_a_400_not_a_crash(server):
    # The same guard protects POST /api/events, which shares the connection threads' stack.
    status, _, body = server.request("POST", "/api/events", "[" * 10000,
                                     headers={"Content-Type": "application/json"})
    assert status == 400 and body["error"] == "bad_request"
    assert server.request("GET", "/api/status")[0] == 200


def test_ping_message_gets_pong_with_the_time_and_protocol_pings_are_answered(server):
    async def body():
        async with ws_connect(server, ping_interval=None) as ws:
            await opened(ws)
            reply = await request(ws, {"type": "ping"})
            assert reply["type"] == "pong"
            assert abs(reply["timestamp"] - time.time()) < 60
            # A protocol-level ping (opcode 9) is answered with a pong frame.
            pong_arrived = await ws.ping(b"are you there")
            await asyncio.wait_for(pong_arrived, TIMEOUT)

    run(body())


def test_request_video_stream_names_this_clients_stream(server):
    async def body():
        async with ws_connect(server, "?client_id=hall") as ws:
            await opened(ws)
            reply = await request(ws, {"type": "request_video_stream", "quality": "low"})
            assert reply == {"type": "video_stream_ready",
                             "stream_url": "/stream/video/hall?quality=low", "quality": "low"}
            reply = await request(ws, {"type": "request_video_stream"})
            assert reply["type"] == "video_stream_ready"
            assert reply["stream_url"] == f"/stream/video/hall?quality={reply['quality']}"

    run(body())


def test_a_binary_message_closes_with_1003(server):
    async def body():
        async with ws_connect(server) as ws:
            await opened(ws)
            await ws.send(b"\x00\x01binary")
            with pytest.raises(ConnectionClosedError) as closed:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert closed.value.rcvd.code == 1003

    run(body())


def test_64_kib_is_accepted_and_one_byte_more_closes_with_1009(server):
    limit = 64 * 1024
    ping = '{"type": "ping"}'

    async def body():
        async with ws_connect(server) as ws:
            await opened(ws)
            # JSON may end in whitespace: exactly 64 KiB is a valid ping.
            await ws.send(ping + " " * (limit - len(ping)))
            assert (await recv_json(ws))["type"] == "pong"
            await ws.send(ping + " " * (limit + 1 - len(ping)))
            with pytest.raises(ConnectionClosedError) as closed:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert closed.value.rcvd.code == 1009

        # Also when the message comes in fragments that are each small enough.
        async with ws_connect(server) as ws:
            await opened(ws)
            await ws.send(iter(["a" * 40000, "b" * 40000]))
            with pytest.raises(ConnectionClosedError) as closed:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert closed.value.rcvd.code == 1009

    run(body())
    # The server is unharmed.
    assert server.request("GET", "/api/status")[0] == 200


def test_text_that_is_not_utf8_closes_with_1007(server):
    raw = RawWebSocket(server)
    try:
        assert raw.read_json()["type"] == "connected"
        raw.send_frame(0x1, b'{"type": "ping", "x": "\xff\xfe"}')
        opcode, payload = raw.read_frame()
        assert opcode == 0x8 and close_code(payload) == 1007
    finally:
        raw.close()


def test_last_event_id_replays_stored_events_on_subscribe_then_live(server):
    first = server.post_event("doorbell_pressed")
    stored = [server.post_event(t) for t in ("motion_detected", "doorbell_pressed")]

    async def body():
        async with ws_connect(server, f"?last_event_id={first['id']}") as ws:
            await opened(ws)
            # Nothing is sent before the client says what it wants.
            await still_open(ws)
            await subscribe(ws, ["*"])
            assert [await next_live_event(ws) for _ in stored] == stored
            live = await in_thread(server.post_event, "system_alert")
            assert await next_live_event(ws) == live

        # A replay honours the subscription.
        async with ws_connect(server, f"?last_event_id={first['id']}") as ws:
            await opened(ws)
            await subscribe(ws, ["doorbell_pressed"])
            assert await next_live_event(ws) == stored[1]
            ring = await in_thread(server.post_event, "doorbell_pressed")
            assert await next_live_event(ws) == ring

    run(body())


def test_replay_then_live_loses_nothing_and_repeats_nothing_while_events_flow(make_server):
    s = make_server()
    first = s.post_event()["id"]
    producers, per_producer = 8, 30
    total = producers * per_producer
    lock = threading.Lock()
    posted = []
    some_posted = threading.Event()

    def produce():
        for _ in range(per_producer):
            event_id = s.post_event()["id"]
            with lock:
                posted.append(event_id)
                if len(posted) == total // 4:
                    some_posted.set()

    # Several producers at once: the writer commits them in batches, so events are being
    # stored and fanned out while the client replays.
    threads = [threading.Thread(target=produce) for _ in range(producers)]
    for thread in threads:
        thread.start()

    async def body():
        # Connect while the producers are busy: part of what we want is stored before we
        # subscribe, part arrives while we replay, part after.
        await in_thread(some_posted.wait, TIMEOUT)
        async with ws_connect(s, f"?last_event_id={first}", token=None) as ws:
            await opened(ws)
            await subscribe(ws)
            got = []
            while len(got) < total:
                got.append((await next_live_event(ws))["id"])
            return got

    got = run(body())
    for thread in threads:
        thread.join()
    assert got == list(range(first + 1, first + 1 + total))
    assert sorted(posted) == got


def test_a_gap_is_announced_when_retention_deleted_what_the_client_missed(make_server):
    s = make_server("max_events = 3\n")
    events = [s.post_event() for _ in range(6)]

    async def body():
        async with ws_connect(s, f"?last_event_id={events[0]['id']}", token=None) as ws:
            await opened(ws)
            await subscribe(ws)
            gap = await recv_json(ws)
            assert gap == {"type": "gap", "from": events[0]["id"], "to": events[3]["id"]}
            assert [await next_live_event(ws) for _ in range(3)] == events[3:]

    run(body())
