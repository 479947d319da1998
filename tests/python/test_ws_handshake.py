"""Opening the WebSocket: Origin, tokens, the handshake itself and the connection limit are all
checked before the upgrade, and a refusal is a plain HTTP error with the JSON body."""

import http.client
import json

import pytest
from websockets.exceptions import InvalidStatus

from conftest import (ADMIN, CONTROL, TIMEOUT, VIEWER, opened, run, wait_until,
                      ws_connect)

WS_GAUGE = 'porchlight_clients{kind="websocket"}'


def refused_status(server, **kwargs):
    """Tries to open a WebSocket that must be refused; returns (status, headers, JSON body)."""

    async def body():
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(server, **kwargs):
                pass
        response = refused.value.response
        return response.status_code, response.headers, json.loads(response.body)

    return run(body())


def opens(server, **kwargs):
    async def body():
        async with ws_connect(server, **kwargs) as ws:
            return await opened(ws)

    return run(body())


def test_same_origin_listed_origin_and_no_origin_are_accepted(server):
    assert opens(server, origin=server.origin)["type"] == "connected"
    assert opens(server, origin="http://door.local:8080")["type"] == "connected"
    # Not a browser (scripts, home automation): no Origin at all.
    assert opens(server)["type"] == "connected"


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:1", "null"])
def test_a_foreign_origin_is_refused_with_403_before_upgrade(server, origin):
    before = server.metric("porchlight_events_total")
    status, _, body = refused_status(server, origin=origin)
    assert status == 403
    assert body["error"] == "forbidden_origin" and body["message"]
    assert server.metric(WS_GAUGE) == 0
    assert server.metric("porchlight_events_total") == before


@pytest.mark.parametrize("token", [None, "not-a-valid-token"])
def test_a_missing_or_wrong_token_is_refused_with_401(server, token):
    status, headers, body = refused_status(server, token=token)
    assert status == 401
    assert body["error"] == "unauthorized"
    assert "Bearer" in headers["WWW-Authenticate"]


def test_every_role_may_open_it_and_the_token_may_come_in_the_query_or_cookie(server):
    for token in (VIEWER, CONTROL, ADMIN):
        assert opens(server, token=token)["type"] == "connected"

    async def by_query():
        async with ws_connect(server, f"?token={VIEWER}", token=None) as ws:
            return await opened(ws)

    async def by_cookie():
        async with ws_connect(server, token=None,
                              additional_headers={"Cookie": f"porchlight_token={VIEWER}"}) as ws:
            return await opened(ws)

    assert run(by_query())["type"] == "connected"
    assert run(by_cookie())["type"] == "connected"


def http_get_ws(server, headers, method="GET", path="/ws"):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    conn.request(method, path, headers={"Authorization": f"Bearer {ADMIN}", **headers})
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, dict(response.getheaders()), body


GOOD = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def test_a_request_that_is_not_a_websocket_handshake_gets_a_json_error(server):
    status, headers, body = http_get_ws(server, {})
    assert status == 426 and body["error"] == "upgrade_required"

    status, headers, body = http_get_ws(server, {**GOOD, "Sec-WebSocket-Version": "8"})
    assert status == 426 and body["error"] == "unsupported_version"
    assert headers["Sec-WebSocket-Version"] == "13"

    no_key = {k: v for k, v in GOOD.items() if k != "Sec-WebSocket-Key"}
    status, _, body = http_get_ws(server, no_key)
    assert status == 400 and body["error"] == "bad_request"

    status, _, body = http_get_ws(server, {**GOOD, "Sec-WebSocket-Key": "too-short"})
    assert status == 400

    status, headers, body = http_get_ws(server, GOOD, method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("query", ["?client_id=has%20space", "?last_event_id=abc",
                                   "?last_event_id=-1"])
def test_bad_parameters_are_refused_with_400(server, query):
    status, _, body = http_get_ws(server, GOOD, path=f"/ws{query}")
    assert status == 400 and body["error"] == "bad_request"
    assert body["message"]


def test_over_max_ws_clients_is_503_with_retry_after_until_a_slot_frees(make_server):
    s = make_server("max_ws_clients = 2\n")

    async def body():
        async with ws_connect(s, token=None) as a, ws_connect(s, token=None) as b:
            await opened(a)
            await opened(b)
            with pytest.raises(InvalidStatus) as refused:
                async with ws_connect(s, token=None):
                    pass
            response = refused.value.response
            assert response.status_code == 503
            assert json.loads(response.body)["error"] == "too_many_clients"
            assert response.headers["Retry-After"]
            # The two that are in still work.
            await a.send(json.dumps({"type": "ping"}))
            assert json.loads(await a.recv())["type"] == "pong"

    run(body())
    # Both closed: their slots come back, and a new client gets in.
    wait_until(lambda: s.metric(WS_GAUGE) == 0)
    assert opens(s, token=None)["type"] == "connected"
