"""Tandem's TURN service against clients nobody here wrote: coturn's turnutils_uclient (with
turnutils_peer as the far end), aioice's TURN client, and an aiortc call restricted to relayed
candidates. Everything runs on 127.0.0.0/8; the server is told to allow loopback peers, except
127.0.0.3, which it must refuse.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import socket
import subprocess
import time

import aioice.turn
import pytest
from websockets.asyncio.client import connect

from conftest import TURN_SECRET
from rtc import MIN_AUDIO_FRAMES, MIN_VIDEO_FRAMES, nominated, wait_for
from test_p2p_call import TEST_TIMEOUT_S, Peer

SENT = re.compile(r"tot_send_msgs=(?P<sent>\d+), tot_recv_msgs=(?P<received>\d+)")
LOST = re.compile(r"Total lost packets (?P<lost>\d+)")


# The loss-free runs below rely on socket buffers big enough for a burst: the server asks for 4 MiB
# (granted as root whatever the host says), and uclient and turnutils_peer get what net.core.*mem_max
# allow, which is 208 KiB on a Debian host and more elsewhere. Set for these tests, restored after.
SOCKET_BUFFER_SYSCTLS = {"net/core/rmem_max": "4194304", "net/core/wmem_max": "4194304"}


@pytest.fixture(autouse=True, scope="module")
def socket_buffer_limits():
    saved = {key: open(f"/proc/sys/{key}").read().strip() for key in SOCKET_BUFFER_SYSCTLS}
    try:
        for key, value in SOCKET_BUFFER_SYSCTLS.items():
            with open(f"/proc/sys/{key}", "w") as f:
                f.write(value)
    except PermissionError:
        pytest.fail("the TURN tests set net.core.rmem_max and wmem_max: run them as root")
    yield
    for key, value in saved.items():
        with open(f"/proc/sys/{key}", "w") as f:
            f.write(value)


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture
def echo_peer():
    """coturn's turnutils_peer: a UDP echo on loopback. Returns a function that starts one on a host."""
    processes = []

    def start(host: str = "127.0.0.1") -> int:
        port = free_udp_port(host)
        processes.append(subprocess.Popen(
            ["turnutils_peer", "-L", host, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.2)
        return port

    yield start
    for p in processes:
        p.terminate()
        p.wait(timeout=5)


def uclient(server, peer_host: str, peer_port: int, *flags: str, messages: int = 100, clients: int = 10,
            user: tuple[str, str] | None = None, interval_ms: int = 5) -> subprocess.CompletedProcess:
    """Runs turnutils_uclient with REST credentials derived from the shared secret (-W), or a given user."""
    port = server.turns_port if "-S" in flags else server.turn_port
    auth = ["-u", user[0], "-w", user[1]] if user else ["-W", TURN_SECRET, "-u", "uclient"]
    command = ["turnutils_uclient", *auth, "-e", peer_host, "-r", str(peer_port), "-n", str(messages), "-m", str(clients),
               "-l", "172", "-z", str(interval_ms), "-p", str(port), *flags, "127.0.0.1"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def totals(result: subprocess.CompletedProcess) -> tuple[int, int, int]:
    out = result.stdout + result.stderr
    sent = SENT.findall(out)
    lost = LOST.search(out)
    assert sent and lost, f"no totals in turnutils_uclient output:\n{out[-3000:]}"
    s, r = sent[-1]
    return int(s), int(r), int(lost["lost"])


@pytest.mark.parametrize("flags, interval_ms", [((), 5), (("-t",), 5), (("-S", "-t"), 5), (("-S", "-t"), 1), (("-y",), 5),
                                                (("-y", "-t"), 5), (("-s",), 5)],
                         ids=["udp", "tcp", "tls", "tls-every-ms", "udp-client-to-client", "tcp-client-to-client",
                              "udp-send-indications"])
def test_uclient_relays_every_packet(tandem_turn_server, echo_peer, flags, interval_ms):
    # Every millisecond, several answers for one TLS client leave in one round: uclient reads one
    # message per TLS record, so each must be a record of its own.
    peer = echo_peer()
    before = tandem_turn_server.metric('tandem_turn_packets_total{direction="to_client"}')
    result = uclient(tandem_turn_server, "127.0.0.1", peer, *flags, interval_ms=interval_ms)
    sent, received, lost = totals(result)
    # Client-to-client mode pairs the clients up and may round their number up.
    assert sent >= 1000 and received == sent and lost == 0, result.stdout[-2000:]
    after = tandem_turn_server.wait_metric('tandem_turn_packets_total{direction="to_client"}', before + sent)
    assert after - before >= sent, "the server's counters do not show the relayed packets"
    if "-t" in flags:
        # An allocation made over TCP or TLS ends with its connection.
        left = tandem_turn_server.metric("tandem_turn_allocations")
        for _ in range(50):
            if left == 0:
                break
            time.sleep(0.1)
            left = tandem_turn_server.metric("tandem_turn_allocations")
        assert left == 0, f"{left} allocations outlived their TCP connections"


def test_a_denied_peer_gets_403(tandem_turn_server, echo_peer):
    peer = echo_peer("127.0.0.3")
    result = uclient(tandem_turn_server, "127.0.0.3", peer, messages=5, clients=1)
    out = result.stdout + result.stderr
    assert "error 403" in out, out[-2000:]
    assert tandem_turn_server.wait_metric('tandem_turn_errors_total{code="403"}', 1) >= 1


def test_an_expired_credential_gets_401(tandem_turn_server, echo_peer):
    peer = echo_peer()
    username = f"{int(time.time()) - 60}:late"
    password = base64.b64encode(hmac.new(TURN_SECRET.encode(), username.encode(), hashlib.sha1).digest()).decode()
    before = tandem_turn_server.metric('tandem_turn_errors_total{code="401"}')
    result = uclient(tandem_turn_server, "127.0.0.1", peer, messages=5, clients=1, user=(username, password))
    out = result.stdout + result.stderr
    assert "Cannot complete Allocation" in out, out[-2000:]
    assert "tot_recv_msgs=5" not in out
    # One challenge, then the refusal of the expired credential (and uclient's retries).
    assert tandem_turn_server.wait_metric('tandem_turn_errors_total{code="401"}', before + 2) >= before + 2


async def welcome_ice_servers(server) -> list[dict]:
    async with connect(server.signal_url, ssl=server.ssl_context(), server_hostname="localhost", open_timeout=10) as ws:
        await ws.send(json.dumps({"type": "join", "session": "turn-" + secrets.token_hex(6), "name": "probe"}))
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
        await ws.send(json.dumps({"type": "leave"}))
    assert welcome["type"] == "welcome", welcome
    return welcome["provider"]["iceServers"]


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(b"echo:" + data, addr)


class Collect(asyncio.DatagramProtocol):
    def __init__(self):
        self.received = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.received.put_nowait((data, addr))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_aioice_allocates_and_relays_with_the_credentials_from_welcome(tandem_turn_server, transport):
    async def run():
        servers = await welcome_ice_servers(tandem_turn_server)
        turn = next(s for s in servers if any(u.startswith("turn:") for u in s["urls"]))
        url = next(u for u in turn["urls"] if u.endswith("transport=" + transport))
        host, port = url.split(":")[1], int(url.split(":")[2].split("?")[0])
        assert (host, port) == ("127.0.0.1", tandem_turn_server.turn_port)
        loop = asyncio.get_running_loop()
        echo_transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        echo_addr = echo_transport.get_extra_info("sockname")
        relay, collector = await aioice.turn.create_turn_endpoint(
            Collect, server_addr=(host, port), username=turn["username"], password=turn["credential"], transport=transport)
        try:
            relayed = relay.get_extra_info("sockname")
            assert relayed[0] == "127.0.0.1" and relayed[1] != port
            for i in range(20):
                relay.sendto(f"ping {i}".encode(), echo_addr)
            got = [await asyncio.wait_for(collector.received.get(), 5) for _ in range(20)]
            assert sorted(data for data, _ in got) == sorted(f"echo:ping {i}".encode() for i in range(20))
            assert all(addr == echo_addr for _, addr in got)
        finally:
            relay.close()
            echo_transport.close()

    asyncio.run(asyncio.wait_for(run(), 30))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_an_aiortc_call_on_relayed_candidates_only_goes_through_tandem_turn(tandem_turn_server, loopback_ice, transport):
    async def call():
        server = tandem_turn_server
        session = "turn-call-" + secrets.token_hex(6)
        ann = Peer("Ann", session, server, luma=200, hz=440, turn_transport=transport)
        ben = Peer("Ben", session, server, luma=60, hz=660, turn_transport=transport)
        peers = (ann, ben)
        before = server.metric('tandem_turn_packets_total{direction="to_client"}')
        try:
            await ann.join()
            await ben.join()
            for peer in peers:
                await wait_for(peer.connected, f"{peer.name} connected", peers)
            for peer in peers:
                await wait_for(peer.received.enough, f"{peer.name} receiving media", peers)
            for peer, other in ((ann, ben), (ben, ann)):
                r = peer.received
                assert r.video_frames >= MIN_VIDEO_FRAMES and r.audio_frames >= MIN_AUDIO_FRAMES
                assert abs(r.video_luma - other.luma) < 25, f"{peer.name} sees luma {r.video_luma}"
                pairs = nominated(peer.pc)
                assert pairs and all(p.local_candidate.type == "relay" for p in pairs), f"{peer.name}: {pairs}"
                assert peer.errors == []
        finally:
            await asyncio.gather(*(peer.close() for peer in peers), return_exceptions=True)
        least = before + 2 * (MIN_VIDEO_FRAMES + MIN_AUDIO_FRAMES)
        after = await asyncio.to_thread(server.wait_metric, 'tandem_turn_packets_total{direction="to_client"}', least)
        assert after >= least, "the media did not go through the TURN service"

    asyncio.run(asyncio.wait_for(call(), TEST_TIMEOUT_S))
    assert tandem_turn_server.process.poll() is None
