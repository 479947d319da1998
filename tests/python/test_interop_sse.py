"""Server-Sent Events through third-party client libraries (issue 13): sseclient-py in both forms
its README shows (over requests, and over urllib3 with preload_content=False) and httpx-sse. Each
must get a posted event at once (the delivery latency is printed; the old close-delimited body
made sseclient-py over requests 30 s late and over urllib3 never), must be able to parse every
message it is handed as JSON (a data-less `retry` block used to reach them as an empty message),
and must resume with Last-Event-ID without losing or repeating an event.

The npm `eventsource` package is tested beside the browser tests (tests/browser/eventsource.test.mjs).
"""

import json
import queue
import statistics
import threading
import time

import httpx
import requests
import urllib3
from httpx_sse import connect_sse
from sseclient import SSEClient

from conftest import ADMIN, TIMEOUT

# Events posted per client to measure delivery; the median must be within the target.
SAMPLES = 5
TARGET_S = 0.100


def sseclient_over_requests(url, headers):
    """sseclient-py as its README shows first: over a streamed requests response."""
    response = requests.get(url, stream=True, headers={"Accept": "text/event-stream", **headers},
                            timeout=TIMEOUT)
    client = SSEClient(response)
    return client, ((e.event, e.id, e.data) for e in client.events())


def sseclient_over_urllib3(url, headers):
    """sseclient-py's other documented form: urllib3 with preload_content=False."""
    http = urllib3.PoolManager()
    response = http.request("GET", url, preload_content=False,
                            headers={"Accept": "text/event-stream", **headers},
                            timeout=urllib3.Timeout(connect=TIMEOUT, read=TIMEOUT))
    client = SSEClient(response)
    return client, ((e.event, e.id, e.data) for e in client.events())


class _HttpxStream:
    def __init__(self, url, headers):
        self.client = httpx.Client(timeout=httpx.Timeout(TIMEOUT))
        self.context = connect_sse(self.client, "GET", url, headers=headers)
        self.source = self.context.__enter__()

    def close(self):
        try:
            self.context.__exit__(None, None, None)
        finally:
            self.client.close()


def httpx_sse(url, headers):
    stream = _HttpxStream(url, headers)

    def messages():
        for sse in stream.source.iter_sse():
            # What applications do with every message; the old separate `retry` block made
            # this raise JSONDecodeError on the first one.
            sse.json()
            yield sse.event, sse.id, sse.data

    return stream, messages()


CLIENTS = {
    "sseclient-py (requests)": sseclient_over_requests,
    "sseclient-py (urllib3)": sseclient_over_urllib3,
    "httpx-sse": httpx_sse,
}


class Reader:
    """Runs one client library in a thread; each message it hands over goes to a queue with the
    moment it arrived."""

    def __init__(self, open_client, url, headers=None):
        self.messages = queue.Queue()
        self.opened = threading.Event()
        self.stopping = threading.Event()
        self.error = None
        self.client = None
        self._thread = threading.Thread(target=self._run, args=(open_client, url, headers or {}),
                                        daemon=True)
        self._thread.start()

    def _run(self, open_client, url, headers):
        try:
            self.client, messages = open_client(url, headers)
            self.opened.set()
            for event, event_id, data in messages:
                if self.stopping.is_set():
                    break
                self.messages.put((time.time(), event, event_id, data))
        except Exception as err:  # noqa: BLE001 - reported by next()
            self.error = err
            self.opened.set()
        finally:
            self.messages.put(None)
            if self.client is not None:
                # Closed from this thread: a response read by another thread cannot be closed
                # from outside without waiting for that read (the buffer's lock).
                try:
                    self.client.close()
                except Exception:  # noqa: BLE001 - the connection is going away anyway
                    pass

    def next(self, timeout=TIMEOUT, skip=("heartbeat",)):
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no message within {timeout} s") from None
            if item is None:
                raise AssertionError(f"the stream ended: {self.error!r}")
            if item[1] not in skip:
                return item

    def close(self):
        """Lets go of the stream: the client is closed by its own thread at its next message
        (a heartbeat at the latest), as an application dropping it would."""
        self.stopping.set()


def check_client(server, name, open_client, capsys):
    url = f"{server.origin}/stream/events"
    reader = Reader(open_client, url, {"Authorization": f"Bearer {ADMIN}"})
    arrived, event, _, data = reader.next()
    assert event == "connected", (name, event, data)
    assert json.loads(data)["client_id"]

    latencies = []
    last_id = None
    for n in range(SAMPLES):
        posted = server.post_event("doorbell_pressed", {"n": n, "client": name})
        arrived, event, event_id, data = reader.next()
        assert (event, event_id) == ("doorbell_pressed", str(posted["id"])), (name, event, data)
        assert json.loads(data) == posted
        # From the server's publish stamp to the library handing the event over.
        latencies.append(arrived - posted["timestamp"])
        last_id = event_id
    reader.close()

    # While it is away, two more events; resuming with Last-Event-ID gets exactly those.
    missed = [server.post_event("motion_detected", {"n": n})["id"] for n in range(2)]
    resumed = Reader(open_client, url, {"Authorization": f"Bearer {ADMIN}", "Last-Event-ID": last_id})
    assert resumed.next()[1] == "connected"
    replayed = [int(resumed.next()[2]) for _ in missed]
    assert replayed == missed, (name, replayed, missed)
    live = server.post_event("doorbell_pressed", {"after": "resume"})
    assert int(resumed.next()[2]) == live["id"]
    resumed.close()

    median = statistics.median(latencies)
    with capsys.disabled():
        print(f"\n[interop] {name}: event delivery latency median {median * 1000:.1f} ms, "
              f"max {max(latencies) * 1000:.1f} ms over {SAMPLES} events; "
              f"resumed with Last-Event-ID {last_id}: got {replayed}")
    assert median <= TARGET_S, f"{name}: median delivery {median * 1000:.1f} ms"


def test_sseclient_py_over_requests(make_server, capsys):
    check_client(make_server(), "sseclient-py (requests)", sseclient_over_requests, capsys)


def test_sseclient_py_over_urllib3(make_server, capsys):
    check_client(make_server(), "sseclient-py (urllib3)", sseclient_over_urllib3, capsys)


def test_httpx_sse(make_server, capsys):
    check_client(make_server(), "httpx-sse", httpx_sse, capsys)
