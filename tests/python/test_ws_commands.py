"""system_command: each command with its role, its real effect, and the error codes for commands
that cannot be run (unknown_command, forbidden, bad_params) — request_id echoed throughout."""

import asyncio
import json
import socket

import pytest

from conftest import (ADMIN, CONTROL, TIMEOUT, TOKEN_FLAGS, VIEWER, in_thread, next_live_event, opened,
                      recv_json, request, run, subscribe, ws_connect)


def command(name, params=None, request_id="r-1"):
    message = {"type": "system_command", "command": name, "request_id": request_id}
    if params is not None:
        message["params"] = params
    return message


async def run_command(server, token, name, params=None, request_id="r-1"):
    async with ws_connect(server, token=token) as ws:
        await opened(ws)
        return await request(ws, command(name, params, request_id))


def assert_refused(reply, code, request_id="r-1"):
    assert reply["type"] == "error", reply
    assert reply["code"] == code, reply
    assert reply["request_id"] == request_id
    assert reply["message"]


def last_event_id(server):
    return server.request("GET", "/api/status")[2]["events"]["last_id"]


async def read_sse_event(reader):
    """The next event block of an SSE stream as (event name, data object)."""
    name = None
    while True:
        line = (await asyncio.wait_for(reader.readline(), TIMEOUT)).decode()
        assert line, "the SSE stream ended"
        line = line.rstrip("\n")
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: ") and name not in (None, "connected", "heartbeat"):
            return name, json.loads(line[len("data: "):])


def test_trigger_doorbell_stores_and_fans_out_to_websocket_and_sse_clients(server):
    async def body():
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write((f"GET /stream/events HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                      f"Authorization: Bearer {VIEWER}\r\n\r\n").encode())
        await writer.drain()
        while b"event: connected" not in await asyncio.wait_for(reader.readline(), TIMEOUT):
            pass
        async with ws_connect(server, token=VIEWER) as watcher, \
                ws_connect(server, token=CONTROL) as ringer:
            await opened(watcher)
            await subscribe(watcher, ["doorbell_pressed"])
            await opened(ringer)
            reply = await request(ringer, command("trigger_doorbell", {}, request_id=17))
            assert reply["type"] == "command_result"
            assert reply["command"] == "trigger_doorbell"
            assert reply["request_id"] == 17 and reply["success"] is True
            event = reply["result"]
            assert event["event_type"] == "doorbell_pressed"
            assert event["source"] == "websocket"
            # Fanned out to another WebSocket client and to SSE.
            assert await next_live_event(watcher) == event
            assert await read_sse_event(reader) == ("doorbell_pressed", event)
        writer.close()
        return event

    event = run(body())
    # Stored: it is on disk and served by the REST API.
    status, _, stored = server.request("GET", f"/api/events/{event['id']}", token=VIEWER)
    assert status == 200 and stored == event


def test_a_viewer_cannot_trigger_the_doorbell_and_nothing_is_stored(server):
    before = last_event_id(server)
    reply = run(run_command(server, VIEWER, "trigger_doorbell", request_id="ring-1"))
    assert_refused(reply, "forbidden", "ring-1")
    assert last_event_id(server) == before


def test_get_system_status_returns_the_whole_status_object_to_a_viewer(server):
    reply = run(run_command(server, VIEWER, "get_system_status"))
    assert reply["type"] == "command_result" and reply["success"] is True
    assert reply["command"] == "get_system_status" and reply["request_id"] == "r-1"
    status = reply["result"]
    for key in ("timestamp", "uptime_s", "version", "cpu_percent", "rss_bytes",
                "mem_available_bytes", "load_avg", "temperature_c", "camera", "clients",
                "events", "doorbell"):
        assert key in status, key
    assert status["clients"]["websocket"] >= 1
    assert status["rss_bytes"] > 0


def test_restart_pipeline_needs_admin(server):
    reply = run(run_command(server, CONTROL, "restart_pipeline"))
    assert_refused(reply, "forbidden")
    reply = run(run_command(server, VIEWER, "restart_pipeline"))
    assert_refused(reply, "forbidden")


def test_restart_pipeline_by_an_admin_runs_and_reports_its_outcome(server):
    reply = run(run_command(server, ADMIN, "restart_pipeline", request_id="restart"))
    assert reply["type"] == "command_result"
    assert reply["command"] == "restart_pipeline" and reply["request_id"] == "restart"
    # The camera was reopened: it reports itself starting (or already streaming again).
    assert reply["success"] is True, reply
    assert reply["result"]["camera"]["state"] in ("starting", "streaming")


def first_jpeg_size(port, path):
    """(width, height) of the first JPEG part of an MJPEG stream, read from its SOF marker."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while b"\xff\xd9" not in data:
            chunk = sock.recv(65536)
            assert chunk, "stream ended before a whole JPEG"
            data += chunk
    jpeg = data[data.index(b"\xff\xd8"):]
    i = 2
    while i < len(jpeg):
        marker, length = jpeg[i + 1], int.from_bytes(jpeg[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            height = int.from_bytes(jpeg[i + 5:i + 7], "big")
            width = int.from_bytes(jpeg[i + 7:i + 9], "big")
            return width, height
        i += 2 + length
    raise AssertionError("no SOF marker in the first JPEG")


def test_set_quality_changes_what_stream_video_sends_without_a_preset(server):
    path = f"/stream/video?token={VIEWER}"
    assert first_jpeg_size(server.port, path) == (640, 480)
    reply = run(run_command(server, ADMIN, "set_quality", {"quality": "low"}))
    assert reply["success"] is True, reply
    assert first_jpeg_size(server.port, path) == (320, 240)


def test_set_quality_changes_the_default_preset(make_server):
    s = make_server(args=TOKEN_FLAGS)

    async def body():
        async with ws_connect(s, token=CONTROL) as ws:
            await opened(ws)
            before = await request(ws, {"type": "request_video_stream"})
            assert before["quality"] == "medium"
            reply = await request(ws, command("set_quality", {"quality": "low"}))
            assert reply == {"type": "command_result", "command": "set_quality",
                             "request_id": "r-1", "success": True,
                             "result": {"quality": "low"}}
        # Every client now gets the new default.
        async with ws_connect(s, token=VIEWER) as ws:
            await opened(ws)
            after = await request(ws, {"type": "request_video_stream"})
            assert after["quality"] == "low"
            assert after["stream_url"].endswith("?quality=low")

    run(body())


@pytest.mark.parametrize("params", [None, {}, {"quality": "ultra"}, {"quality": 3},
                                    {"quality": "low", "fps": 5}, "low"])
def test_set_quality_with_bad_params_is_refused_and_changes_nothing(make_server, params):
    s = make_server()

    async def body():
        async with ws_connect(s, token=None) as ws:
            await opened(ws)
            reply = await request(ws, command("set_quality", params))
            assert_refused(reply, "bad_params")
            after = await request(ws, {"type": "request_video_stream"})
            assert after["quality"] == "medium"

    run(body())


def test_a_viewer_cannot_set_quality(server):
    reply = run(run_command(server, VIEWER, "set_quality", {"quality": "high"}))
    assert_refused(reply, "forbidden")


def test_unknown_commands_and_non_object_params_are_refused(server):
    reply = run(run_command(server, ADMIN, "reboot_the_house", request_id=99))
    assert_refused(reply, "unknown_command", 99)
    reply = run(run_command(server, ADMIN, "get_system_status", params=[1, 2]))
    assert_refused(reply, "bad_params")
    reply = run(run_command(server, ADMIN, "trigger_doorbell", params={"loud": True}))
    assert_refused(reply, "bad_params")

    async def no_command():
        async with ws_connect(server) as ws:
            await opened(ws)
            return await request(ws, {"type": "system_command", "request_id": "x"})

    assert_refused(run(no_command()), "bad_params", "x")


def test_role_is_checked_before_params(server):
    # A forbidden command is forbidden whatever its params say.
    reply = run(run_command(server, VIEWER, "set_quality", {"quality": "ultra"}))
    assert_refused(reply, "forbidden")


def test_a_command_without_request_id_gets_null(server):
    async def body():
        async with ws_connect(server, token=VIEWER) as ws:
            await opened(ws)
            await ws.send(json.dumps({"type": "system_command", "command": "get_system_status"}))
            return await recv_json(ws)

    reply = run(body())
    assert reply["type"] == "command_result" and reply["request_id"] is None
