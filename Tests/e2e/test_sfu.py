"""The SFU provider end to end: `tandem serve` with its SFU adapter pointed at a `tandem daily-standin`
process (a stand-in of Daily's REST API), or at the stand-in `serve --dev --sfu-standin` runs itself.
Plain WebSocket clients report health; the stand-in validates the tokens they receive."""

import asyncio
import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from conftest import DEFAULT_BIN, _launch, _stop
from rtc import SignalingClient

API_KEY = "e2e-daily-key-0123456789"
BAD = {"type": "health", "epoch": 1, "provider": "p2p", "media": "connected", "rttMs": 650, "lossPct": 1, "jitterMs": 5}


@pytest.fixture
def standin(tmp_path):
    """A `tandem daily-standin` process on a loopback port of its choosing; yields its API base URL."""
    binary = Path(os.environ.get("TANDEM_BIN", str(DEFAULT_BIN)))
    process = subprocess.Popen(
        [str(binary), "daily-standin", "--listen", "127.0.0.1:0", "--api-key", API_KEY],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+/v1)", line)
        assert found, f"the stand-in said {line!r}"
        yield found[1]
    finally:
        _stop(process)


def http(method: str, url: str, body: dict | None = None, key: str | None = API_KEY) -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def control(base: str, path: str) -> str:
    return base.removesuffix("/v1") + path


class Client(SignalingClient):
    def __init__(self, server, session: str) -> None:
        self.server = server
        self.session = session

    async def join(self) -> dict:
        self.ws = await connect(self.server.signal_url, ssl=self.server.ssl_context(), server_hostname="localhost", open_timeout=10)
        await self.send({"type": "join", "session": self.session})
        self.welcome = await self.next("welcome")
        return self.welcome

    async def next(self, kind: str, timeout: float = 15, where=lambda m: True) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), max(0.1, deadline - time.monotonic())))
            if message.get("type") == kind and where(message):
                return message
            assert message.get("type") != "error" or kind == "error", f"unexpected error {message}"


def launch(request, tmp_path, *extra):
    return _launch(request, tmp_path, turn=False, extra=list(extra))


@pytest.fixture
def sfu_server(request, tmp_path, standin):
    yield from launch(request, tmp_path, "--sfu-url", standin, "--sfu-api-key", API_KEY, "--sfu-prepare", "quality-trend")


def check_token(base: str, token: str, session: str, participant: str) -> None:
    status, claims = http("GET", f"{base}/meeting-tokens/{token}")
    assert status == 200, f"the stand-in refused a token: {claims}"
    assert claims["room_name"] == session and claims["user_id"] == participant and claims["is_owner"] is False


def test_sustained_bad_quality_moves_both_clients_to_one_sfu_room(sfu_server, standin):
    async def run():
        a, b = Client(sfu_server, "e2e-sfu"), Client(sfu_server, "e2e-sfu")
        await a.join()
        await b.join()
        assert a.welcome["provider"]["name"] == "p2p"
        for _ in range(3):
            await a.send(BAD)
        moved = [await a.next("provider"), await b.next("provider")]
        assert {m["name"] for m in moved} == {"sfu"} and {m["epoch"] for m in moved} == {2}
        assert {m["reason"] for m in moved} == {"quality"}
        tokens = [m["sfu"]["token"] for m in moved]
        assert tokens[0] != tokens[1]
        for client, message in zip((a, b), moved):
            assert message["sfu"]["provider"] == "daily" and message["sfu"]["url"].endswith("/rooms/e2e-sfu")
            check_token(standin, message["sfu"]["token"], "e2e-sfu", client.welcome["participant"])
        # Exactly one switch: the admin view's history has the join and this one.
        view = sfu_server.admin("GET", "/v1/sessions/e2e-sfu")
        assert [(h["epoch"], h["provider"]) for h in view["history"]] == [(1, "p2p"), (2, "sfu")]
        for client in (a, b):
            await client.close()
    asyncio.run(run())
    # The session ended: its room is deleted.
    deadline = time.monotonic() + 10
    while http("GET", f"{standin}/rooms/e2e-sfu")[0] != 404:
        assert time.monotonic() < deadline, "the room outlived its session"
        time.sleep(0.1)
    assert sfu_server.wait_metric('tandem_sfu_room_deletes_total{outcome="deleted"}', 1) == 1


def test_a_failing_sfu_service_leaves_the_session_working_with_an_alert(sfu_server, standin):
    assert http("POST", control(standin, "/_standin/faults"), {"failNext": 1000, "failStatus": 500})[0] == 200

    async def run():
        a, b = Client(sfu_server, "e2e-sfu-down"), Client(sfu_server, "e2e-sfu-down")
        await a.join()
        await b.join()
        for _ in range(3):
            await a.send(BAD)
        for client in (a, b):
            alert = await client.next("alert", where=lambda m: m["kind"] == "sfu_unavailable")
            assert alert["value"] == 500 and "server-error" in alert["detail"]
        view = sfu_server.admin("GET", "/v1/sessions/e2e-sfu-down")
        assert view["provider"] == {"name": "p2p", "epoch": 1}
        for client in (a, b):
            await client.ws.close()
    asyncio.run(run())
    assert sfu_server.metric('tandem_sfu_preparations_total{outcome="failed"}') >= 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dev_server_with_its_own_standin_moves_a_third_joiner_to_the_sfu(request, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    for server in launch(request, tmp_path, "--sfu-standin", f"127.0.0.1:{port}", "--sfu-api-key", API_KEY):
        async def run():
            clients = [Client(server, "e2e-three") for _ in range(3)]
            for client in clients[:2]:
                await client.join()
            third = await clients[2].join()
            assert third["provider"]["name"] == "sfu" and third["provider"]["epoch"] == 2
            moved = [await c.next("provider") for c in clients[:2]]
            assert {(m["name"], m["epoch"], m["reason"]) for m in moved} == {("sfu", 2, "join")}
            offers = [m["sfu"] for m in moved] + [third["provider"]["sfu"]]
            assert len({o["token"] for o in offers}) == 3
            for client, offer in zip(clients, offers):
                check_token(base, offer["token"], "e2e-three", client.welcome["participant"])
            for client in clients:
                await client.ws.close()
        asyncio.run(run())
