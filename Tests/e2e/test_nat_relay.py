"""A real NAT failure: two peers that cannot reach each other fall back from P2P to the server's relay.

The test builds its own small network out of network namespaces (created here, removed at the end, also
on failure), with nothing but `lo` and veth pairs in them:

    ns a (Ann)  10.77.1.2/24 --veth-- 10.77.1.1/24  ns srv (tandem serve)  10.77.2.1/24 --veth-- 10.77.2.2/24  ns b (Ben)

ns a and ns b each have only their own /24 and no default route, and ns srv does not forward (the
fixture sets `net.ipv4.ip_forward=0` and the other settings the topology relies on, since a new
namespace starts with the host's, then checks them): both peers reach the server, but there is no route
between the peers.

The server runs inside ns srv (`ip netns exec`), its relay gathering on 10.77.1.1 and 10.77.2.1. Each
peer is aiortc in a thread of this process that has entered the peer's namespace with setns(2) (which
moves only the calling thread, so every socket of that peer, and only of that peer, lives in its
namespace). The two threads talk only through the server. Each gathers only its own veth address
(`aioice.ice.get_host_addresses` is replaced per thread) and gets no ICE servers.

The flow the server must carry: both join over wss (with join tokens: they do not come from loopback)
and get `p2p` at epoch 1; Ann offers to Ben; ICE fails (10.77.1.2 and 10.77.2.2 cannot reach each
other); the peers report `health` `media: failed`; the arbiter moves the session, once, to `relay` at
epoch 2 with reason `failure`; each peer offers to `server`, connects to the relay on its own subnet,
and receives the other's audio and video.

aioice retransmits a connectivity check 6 times with a doubling timeout from 0.5 s, so a pair that never
answers fails only after about 63 s. The test lowers that to 3 retransmissions (a check fails after
7.5 s, in the range a browser takes) so that aiortc's own ICE failure is what the peers report; a
peer that has not seen it after P2P_CONNECT_TIMEOUT_S reports the failure anyway, as a client's own
connect timeout would, and the test records which of the two happened.
"""

import asyncio
import errno
import ipaddress
import secrets
import socket
import subprocess
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass

import aioice.ice
import aioice.stun
import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from conftest import _launch
from netns import enter, require_namespaces, run_in_netns
from rtc import (
    FlatVideoTrack, Received, SignalingClient, ToneAudioTrack, candidate_addresses, candidate_from_init, check_media, consume,
    in_network, nominated_pairs, only_network)

SERVER_A, PEER_A, NET_A = "10.77.1.1", "10.77.1.2", ipaddress.ip_network("10.77.1.0/24")
SERVER_B, PEER_B, NET_B = "10.77.2.1", "10.77.2.2", ipaddress.ip_network("10.77.2.0/24")

STUN_RETRANSMISSIONS = 3  # aioice's default is 6 (a check gives up after ~63 s); 3 gives up after 7.5 s
P2P_CONNECT_TIMEOUT_S = 15.0  # a peer's own connect timeout, if aiortc has not failed by then
PHASE_TIMEOUT_S = 20.0  # any single later step (relay connected, media flowing, ...)
PEER_TIMEOUT_S = 70.0  # one peer's whole run, an asyncio timeout in its own thread
TEST_TIMEOUT_S = 80.0  # the main thread's wait for both peers


# --- namespaces ------------------------------------------------------------------------------------

def ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


@dataclass
class NatLab:
    srv: str
    a: str
    b: str


# What the topology relies on, set in each namespace before its veth is made (so that `default` reaches
# the new interface) and checked afterwards. A new namespace starts with the host's IPv4 settings (and,
# with net.core.devconf_inherit_init_net=1, its IPv6 ones): a Docker or Kubernetes host forwards.
LAB_SYSCTLS = {
    "net/ipv4/ip_forward": "0",  # srv must not route between the peers
    "net/ipv6/conf/all/forwarding": "0",
    "net/ipv4/conf/all/rp_filter": "1",  # strict: every route here is symmetric
    "net/ipv4/conf/default/rp_filter": "1",
    "net/ipv4/conf/all/accept_local": "0",
    "net/ipv6/conf/default/disable_ipv6": "1",  # the veths carry IPv4 only: no link-local path either
}
VETH_SYSCTLS = {"net/ipv4/conf/{}/rp_filter": "1", "net/ipv6/conf/{}/disable_ipv6": "1"}


def write_sysctls(values: dict[str, str]) -> None:
    """Writes /proc/sys from the calling thread, whose network namespace /proc/sys/net then shows."""
    for key, value in values.items():
        with open(f"/proc/sys/{key}", "w") as f:
            f.write(value)


def read_sysctls(keys) -> dict[str, str]:
    return {key: open(f"/proc/sys/{key}").read().strip() for key in keys}


def wanted_settings(lab: NatLab) -> dict[str, dict[str, str]]:
    """Each namespace's topology settings, as the lab sets them."""
    veths = {lab.srv: ("vsrv-a", "vsrv-b"), lab.a: ("vpeer",), lab.b: ("vpeer",)}
    return {ns: {**LAB_SYSCTLS, **{k.format(i): v for i in veths[ns] for k, v in VETH_SYSCTLS.items()}}
            for ns in (lab.srv, lab.a, lab.b)}


def lab_settings(lab: NatLab) -> dict[str, dict[str, str]]:
    """The same settings as each namespace's kernel reports them."""
    return {ns: run_in_netns(ns, read_sysctls, list(wanted)) for ns, wanted in wanted_settings(lab).items()}


@contextmanager
def nat_lab_namespaces():
    """Three fresh namespaces: srv with a veth to a (10.77.1.0/24) and one to b (10.77.2.0/24), no forwarding."""
    tag = secrets.token_hex(3)
    lab = NatLab(srv=f"tnat-srv-{tag}", a=f"tnat-a-{tag}", b=f"tnat-b-{tag}")
    made = []
    try:
        for name in (lab.srv, lab.a, lab.b):
            ip("netns", "add", name)
            made.append(name)
            ip("-n", name, "link", "set", "lo", "up")
            run_in_netns(name, write_sysctls, LAB_SYSCTLS)
        # Each pair is made inside srv with its other end moved straight into the peer's namespace:
        # no interface of the test ever exists in the host's own namespace.
        for peer_ns, server_if, peer_if, server_ip, peer_ip in (
            (lab.a, "vsrv-a", "vpeer", SERVER_A, PEER_A),
            (lab.b, "vsrv-b", "vpeer", SERVER_B, PEER_B),
        ):
            ip("-n", lab.srv, "link", "add", server_if, "type", "veth", "peer", "name", peer_if, "netns", peer_ns)
            run_in_netns(lab.srv, write_sysctls, {k.format(server_if): v for k, v in VETH_SYSCTLS.items()})
            run_in_netns(peer_ns, write_sysctls, {k.format(peer_if): v for k, v in VETH_SYSCTLS.items()})
            ip("-n", lab.srv, "addr", "add", f"{server_ip}/24", "dev", server_if)
            ip("-n", lab.srv, "link", "set", server_if, "up")
            ip("-n", peer_ns, "addr", "add", f"{peer_ip}/24", "dev", peer_if)
            ip("-n", peer_ns, "link", "set", peer_if, "up")
        yield lab
    finally:
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


@pytest.fixture
def nat_lab():
    require_namespaces()
    with nat_lab_namespaces() as lab:
        yield lab


def udp_send_error(target: str) -> int | None:
    """The errno of sending one UDP datagram to target from the current thread's namespace, None if sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(b"x", (target, 9))
        except OSError as error:
            return error.errno
    return None


def tcp_reaches(target: str, port: int) -> bool:
    try:
        with socket.create_connection((target, port), timeout=5):
            return True
    except OSError:
        return False


def addresses_in(netns: str) -> list[str]:
    return sorted(line.split()[3] for line in ip("-n", netns, "-o", "-4", "addr", "show").splitlines())


HOST_FORWARDING = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/core/devconf_inherit_init_net")


@pytest.mark.parametrize("forwarding", ["0", "1"], ids=["host-forwarding-off", "host-forwarding-on"])
def test_the_lab_is_the_same_whatever_the_host_forwards(forwarding):
    """The lab is made the same on a host that forwards (Docker, Kubernetes) and on one that does not.

    The host's settings are changed for the lab's making only and restored; with
    devconf_inherit_init_net=1 a new namespace inherits IPv6 settings too, the most a host can hand down.
    """
    require_namespaces()
    host = {HOST_FORWARDING[0]: forwarding, HOST_FORWARDING[1]: forwarding, HOST_FORWARDING[2]: forwarding}
    saved = read_sysctls(HOST_FORWARDING)
    try:
        write_sysctls(host)
        with nat_lab_namespaces() as lab:
            assert lab_settings(lab) == wanted_settings(lab)
            assert run_in_netns(lab.a, udp_send_error, PEER_B) == errno.ENETUNREACH
            assert run_in_netns(lab.b, udp_send_error, PEER_A) == errno.ENETUNREACH
            assert run_in_netns(lab.srv, udp_send_error, PEER_A) is None
    finally:
        write_sysctls(saved)
    assert read_sysctls(HOST_FORWARDING) == saved


# --- the server inside ns srv ------------------------------------------------------------------------

@pytest.fixture
def nat_server(request, tmp_path, nat_lab):
    """`tandem serve --dev` inside ns srv, listening on all its addresses, relaying on both veths.

    The returned TandemServer names 127.0.0.1: its admin API and metrics must be reached from inside
    ns srv (see run_in_netns); the peers use the veth addresses.
    """
    yield from _launch(
        request, tmp_path, turn=False, wrapper=["ip", "netns", "exec", nat_lab.srv], listen="0.0.0.0:0",
        extra=["--relay-address", SERVER_A, "--relay-address", SERVER_B], admin_host="127.0.0.1")


# --- per-thread ICE addresses ------------------------------------------------------------------------

_thread_addresses = threading.local()


def veth_addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
    """aioice gathers in the peer's own thread: only that peer's veth address."""
    addresses = getattr(_thread_addresses, "value", None)
    if addresses is None:
        raise AssertionError(f"ICE gathering in thread {threading.current_thread().name}, which is no peer's")
    return list(addresses)


@pytest.fixture
def nat_ice(monkeypatch):
    monkeypatch.setattr(aioice.ice, "get_host_addresses", veth_addresses)
    monkeypatch.setattr(aioice.stun, "RETRY_MAX", STUN_RETRANSMISSIONS)


# --- one peer, in its own thread and namespace ---------------------------------------------------------

class NatPeer(SignalingClient):
    """Joins over wss, calls p2p, reports the failure, follows the switch to the relay, receives media.

    Everything asyncio (and every socket) is made in the peer's own thread; the main thread reads the
    plain fields once the thread has finished, or while it waits on `release`.
    """

    def __init__(self, name: str, session: str, netns: str, address: str, subnet, signal_url: str, ssl_context,
                 token: str, luma: int, hz: float) -> None:
        self.name, self.session, self.netns = name, session, netns
        self.address, self.subnet = address, subnet
        self.signal_url, self.ssl_context, self.token = signal_url, ssl_context, token
        self.luma, self.hz = luma, hz
        # Cross-thread signals.
        self.joined = threading.Event()
        self.ready = threading.Event()  # relay connected and enough media received
        self.release = threading.Event()  # the main thread is done looking; close
        self.thread: threading.Thread | None = None
        self.failure: str | None = None
        # What happened (read by the main thread afterwards).
        self.welcome = None
        self.participant = None
        self.provider = None
        self.epoch = None
        self.polite = None
        self.media = "new"
        self.errors: list = []
        self.switches: list = []
        self.health_sent: list = []
        self.p2p_remote_sdps: list = []
        self.p2p_local_sdp = None
        self.p2p_states: list = []
        self.p2p_outcome = None  # "ice-failed", "timeout", or "connected" (which would be wrong)
        self.p2p_fail_after_s = None
        self.p2p_reported = False
        self.relay_answers: list = []
        self.relay_dropped: list = []
        self.relay_states: list = []
        self.nominated: list = []
        self.offered_p2p = False
        self.pc = None
        self.pc_kind = None

    # -- thread ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._thread_main, name=f"peer-{self.name}", daemon=True)
        self.thread.start()

    def _thread_main(self) -> None:
        try:
            enter(self.netns)  # this thread only, for good: it ends with the peer
            _thread_addresses.value = [self.address]
            asyncio.run(asyncio.wait_for(self.run(), PEER_TIMEOUT_S))
        except BaseException:
            self.failure = f"{self.name}: {traceback.format_exc()}\nstate: {self.summary()}"
        finally:
            self.ready.set()  # never leave the main thread waiting on a dead peer

    def summary(self) -> dict:
        return {
            "provider": self.provider, "epoch": self.epoch, "media": self.media,
            "pc": (self.pc_kind, self.pc.connectionState if self.pc else None),
            "p2p": (self.p2p_outcome, self.p2p_fail_after_s, self.p2p_states),
            "relay": self.relay_states, "switches": self.switches, "errors": self.errors,
            "received": getattr(self, "received", None), "health": self.health_sent,
        }

    # -- the call --------------------------------------------------------------------------------

    async def run(self) -> None:
        self.received = Received()
        self.video = FlatVideoTrack(self.luma)
        self.audio = ToneAudioTrack(self.hz)
        self.tasks: list = []
        self.p2p_done = asyncio.Event()
        self.relay_connected = asyncio.Event()
        self.pc_failed = asyncio.Event()
        self.pc_connected = asyncio.Event()
        try:
            # No `providers`: the default, all of them.
            welcome = await self.open(self.signal_url, self.ssl_context,
                                      {"type": "join", "session": self.session, "name": self.name, "token": self.token})
            assert self.provider == "p2p", f"{self.name}: welcome provider {welcome['provider']}"
            self.make_pc("p2p")
            self.tasks.append(asyncio.ensure_future(self.read_loop()))
            self.tasks.append(asyncio.ensure_future(self.heartbeat(welcome["heartbeat"]["intervalMs"] / 1000)))
            self.joined.set()
            for peer in welcome["peers"]:
                await self.saw_peer(peer["id"])

            await self.phase(self.p2p_done.wait(), "P2P to fail and the switch to the relay", P2P_CONNECT_TIMEOUT_S + PHASE_TIMEOUT_S)
            await self.phase(self.relay_connected.wait(), "connecting to the relay")
            await self.phase(self.received.enough.wait(), "media through the relay")
            # Ask for a pong: every message the server sent before it has been read.
            self.pong = asyncio.Event()
            await self.send({"type": "ping", "t": 1})
            await self.phase(self.pong.wait(), "a pong")
            self.nominated = nominated_pairs(self.pc)
            self.ready.set()
            # Keep sending media until the other peer has had its share and the main thread has looked.
            await self.phase(asyncio.to_thread(self.release.wait, TEST_TIMEOUT_S), "release", TEST_TIMEOUT_S + 5)
        finally:
            await self.close()

    async def phase(self, awaitable, what: str, timeout: float = PHASE_TIMEOUT_S):
        try:
            return await asyncio.wait_for(awaitable, timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.name}: timed out after {timeout:.0f} s waiting for {what}: {self.summary()}") from None

    def make_pc(self, kind: str) -> None:
        self.pc_kind = kind
        self.pc_failed.clear()
        self.pc_connected.clear()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.pc.addTrack(self.audio)
        self.pc.addTrack(self.video)
        pc = self.pc

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc is not self.pc:
                return
            state = pc.connectionState
            (self.p2p_states if kind == "p2p" else self.relay_states).append(state)
            if state == "failed":
                self.pc_failed.set()
                if kind == "relay":
                    self.set_media("failed")  # honest, and it would fail the test
            elif state in ("connecting", "connected"):
                if state == "connected":
                    self.pc_connected.set()
                    if kind == "relay":
                        self.relay_connected.set()
                self.set_media(state)

        @pc.on("track")
        def _track(track) -> None:
            # Only the relay call ever gets media here; a P2P track would be a bug in the network.
            if kind == "relay":
                self.received.tracks.append(track.kind)
                self.tasks.append(asyncio.ensure_future(consume(track, self.received)))

    def set_media(self, media: str) -> None:
        """A media state change on the current provider: reported at once, as the protocol asks."""
        self.media = media
        self.tasks.append(asyncio.ensure_future(self.report()))

    async def report(self) -> None:
        message = {"type": "health", "epoch": self.epoch, "provider": self.provider, "media": self.media}
        self.health_sent.append((message["epoch"], message["provider"], message["media"]))
        await self.send(message)

    async def heartbeat(self, interval: float) -> None:
        """A health report at least once per heartbeat interval, so the server never sees us go silent."""
        while True:
            await asyncio.sleep(interval * 0.5)
            await self.report()

    # -- P2P ---------------------------------------------------------------------------------------

    async def saw_peer(self, peer_id: str) -> None:
        self.remote_peer = peer_id
        if self.provider == "p2p" and not self.polite and not self.offered_p2p:
            self.offered_p2p = True
            await self.pc.setLocalDescription(await self.pc.createOffer())
            self.p2p_local_sdp = self.pc.localDescription.sdp
            await self.send({"type": "signal", "to": peer_id,
                             "data": {"kind": "offer", "epoch": self.epoch, "sdp": self.p2p_local_sdp}})

    async def on_p2p_signal(self, sender: str, data: dict) -> None:
        kind = data.get("kind")
        if kind not in ("offer", "answer"):
            return  # aiortc puts its candidates in the SDP
        self.remote_peer = sender
        # Every candidate is kept: the call fails because of the network, not because of a filter.
        self.p2p_remote_sdps.append(data["sdp"])
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type=kind))
        if kind == "offer":
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            self.p2p_local_sdp = self.pc.localDescription.sdp
            await self.send({"type": "signal", "to": sender,
                             "data": {"kind": "answer", "epoch": self.epoch, "sdp": self.p2p_local_sdp}})
        # Both descriptions are set: ICE runs now. Watch it.
        self.tasks.append(asyncio.ensure_future(self.watch_p2p(self.epoch)))

    async def watch_p2p(self, epoch: int) -> None:
        """Reports `failed` on aiortc's failed state, or after our own connect timeout."""
        started = time.monotonic()
        failed = asyncio.ensure_future(self.pc_failed.wait())
        connected = asyncio.ensure_future(self.pc_connected.wait())
        try:
            done, _ = await asyncio.wait({failed, connected}, timeout=P2P_CONNECT_TIMEOUT_S,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
            connected.cancel()
        if self.provider != "p2p" or self.epoch != epoch:
            return  # the session moved on (the other peer's report) before we saw the failure
        self.p2p_fail_after_s = round(time.monotonic() - started, 2)
        if connected in done:
            self.p2p_outcome = "connected"  # the test fails on this: the peers must not reach each other
            return
        self.p2p_outcome = "ice-failed" if failed in done else "timeout"
        self.p2p_reported = True
        self.set_media("failed")

    # -- relay -------------------------------------------------------------------------------------

    async def switch(self, message: dict) -> None:
        self.provider = message["name"]
        self.epoch = message["epoch"]
        self.media = "new"
        if self.pc_kind == "p2p":
            self.p2p_done.set()
        if self.pc is not None:
            await self.pc.close()
            self.pc = None
        if self.provider == "relay":
            # Exactly what the client library does: a fresh connection, offered to `server`.
            self.make_pc("relay")
            await self.pc.setLocalDescription(await self.pc.createOffer())
            await self.send({"type": "signal", "to": "server",
                             "data": {"kind": "offer", "epoch": self.epoch, "sdp": self.pc.localDescription.sdp}})

    async def on_relay_signal(self, data: dict) -> None:
        kind = data.get("kind")
        if kind == "answer":
            self.relay_answers.append(data["sdp"])
            # The relay offers both of its addresses; only the one on our own subnet can be reached.
            sdp, dropped = only_network(data["sdp"], self.subnet)
            self.relay_dropped += dropped
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        elif kind == "candidate":
            candidate = candidate_from_init(data["candidate"])
            if in_network(candidate.ip, self.subnet):
                await self.pc.addIceCandidate(candidate)
            else:
                self.relay_dropped.append(candidate.ip)
        elif kind == "end-of-candidates":
            await self.pc.addIceCandidate(None)

    # -- signaling ---------------------------------------------------------------------------------

    async def on_signal(self, sender: str, data: dict) -> None:
        if data.get("epoch") != self.epoch:
            return
        if sender == "server":
            assert self.provider == "relay", f"{self.name}: a signal from the relay on {self.provider}"
            await self.on_relay_signal(data)
        else:
            assert self.provider == "p2p", f"{self.name}: a peer's signal on {self.provider}"
            await self.on_p2p_signal(sender, data)

    async def on_provider(self, message: dict) -> None:
        await self.switch(message)

    def on_pong(self, message: dict) -> None:
        self.pong.set()


# --- the test --------------------------------------------------------------------------------------

RELAY_OUT = 'tandem_relay_packets_total{direction="out"}'


def test_peers_without_a_route_to_each_other_fall_back_from_p2p_to_the_relay(nat_lab, nat_server, nat_ice):
    lab, server = nat_lab, nat_server
    started = time.monotonic()

    # The network: each peer has its own address and reaches the server; the peers cannot reach each
    # other (no route: the send fails at once), and the server's namespace does not forward.
    assert addresses_in(lab.a) == ["10.77.1.2/24", "127.0.0.1/8"]
    assert addresses_in(lab.b) == ["10.77.2.2/24", "127.0.0.1/8"]
    assert addresses_in(lab.srv) == ["10.77.1.1/24", "10.77.2.1/24", "127.0.0.1/8"]
    assert lab_settings(lab) == wanted_settings(lab)
    assert run_in_netns(lab.a, udp_send_error, PEER_B) == errno.ENETUNREACH
    assert run_in_netns(lab.b, udp_send_error, PEER_A) == errno.ENETUNREACH
    assert run_in_netns(lab.a, tcp_reaches, SERVER_A, server.port)
    assert run_in_netns(lab.b, tcp_reaches, SERVER_B, server.port)
    assert not run_in_netns(lab.a, tcp_reaches, SERVER_B, server.port), "ns a reaches the server's other side"

    # Joins from 10.77.x.2 are not loopback joins: each peer needs a token, minted inside ns srv.
    session = "nat-" + secrets.token_hex(8)
    tokens = {
        identity: run_in_netns(lab.srv, server.admin, "POST", "/v1/tokens",
                               {"session": session, "identity": identity, "name": name})["token"]
        for identity, name in (("ann", "Ann"), ("ben", "Ben"))
    }
    before = run_in_netns(lab.srv, server.metric, RELAY_OUT)
    context = server.ssl_context()  # trusts the dev CA; the certificate names localhost (server_hostname below)
    ann = NatPeer("Ann", session, lab.a, PEER_A, NET_A, f"wss://{SERVER_A}:{server.port}/v1/signal", context,
                  tokens["ann"], luma=200, hz=440)
    ben = NatPeer("Ben", session, lab.b, PEER_B, NET_B, f"wss://{SERVER_B}:{server.port}/v1/signal", context,
                  tokens["ben"], luma=60, hz=660)
    peers = (ann, ben)
    try:
        # Ann first: the first joiner is the impolite one, who offers.
        ann.start()
        assert ann.joined.wait(15) and ann.failure is None, ann.failure or "Ann did not join"
        ben.start()
        deadline = time.monotonic() + TEST_TIMEOUT_S
        for peer in peers:
            peer.ready.wait(max(0.0, deadline - time.monotonic()))
        for peer in peers:
            assert peer.failure is None, peer.failure
            assert peer.ready.is_set(), f"{peer.name} not ready after {TEST_TIMEOUT_S:.0f} s: {peer.summary()}"

        # While both are still in the call: the server's view of the session.
        view = None
        for _ in range(50):
            view = run_in_netns(lab.srv, server.admin, "GET", f"/v1/sessions/{session}")
            healths = [p.get("health") or {} for p in view["participants"]]
            if len(healths) == 2 and all(h.get("provider") == "relay" and h.get("media") == "connected" for h in healths):
                break
            time.sleep(0.1)
        sent = run_in_netns(lab.srv, server.wait_metric, RELAY_OUT, before + 300)
    finally:
        for peer in peers:
            peer.release.set()
        for peer in peers:
            if peer.thread is not None:
                peer.thread.join(15)
    for peer in peers:
        assert peer.failure is None, peer.failure
        assert not peer.thread.is_alive(), f"{peer.name}'s thread did not finish"

    # Welcome: p2p at epoch 1 for both, Ann impolite, Ben polite and told about Ann.
    assert ann.welcome["provider"]["name"] == ben.welcome["provider"]["name"] == "p2p"
    assert ann.welcome["provider"]["epoch"] == ben.welcome["provider"]["epoch"] == 1
    assert ann.polite is False and ben.polite is True
    assert ann.welcome["peers"] == [] and ben.welcome["peers"] == [{"id": ann.participant, "name": "Ann"}]

    # P2P was really tried, with each peer's real address, and failed without ever connecting.
    assert ann.offered_p2p and not ben.offered_p2p
    # (aiortc repeats its candidates in the audio and the video section.)
    assert set(candidate_addresses(ann.p2p_local_sdp)) == {PEER_A} and set(candidate_addresses(ben.p2p_local_sdp)) == {PEER_B}
    assert [set(candidate_addresses(s)) for s in ann.p2p_remote_sdps] == [{PEER_B}]
    assert [set(candidate_addresses(s)) for s in ben.p2p_remote_sdps] == [{PEER_A}]
    for peer in peers:
        assert "connected" not in peer.p2p_states, f"{peer.name}: P2P connected across the NAT: {peer.p2p_states}"
        assert peer.p2p_outcome != "connected"
    reporters = [peer for peer in peers if peer.p2p_reported]
    assert reporters, f"nobody reported the P2P failure: {[p.summary() for p in peers]}"
    for peer in reporters:
        assert (1, "p2p", "failed") in peer.health_sent

    # Exactly one coordinated switch, the same for both: relay at epoch 2 because of the failure.
    for peer in peers:
        assert len(peer.switches) == 1, f"{peer.name} saw switches {peer.switches}"
        switch = peer.switches[0]
        assert (switch["name"], switch["epoch"], switch["reason"]) == ("relay", 2, "failure"), switch
        assert switch["previous"] == "p2p", switch
        assert switch["room"] == session and switch["polite"] is True
        assert peer.errors == [], f"{peer.name} got errors {peer.errors}"

    # Each peer's relay leg: one answer, with the relay's address on each subnet; the pair in use is the
    # peer's own address and the relay's address on the same veth.
    for peer, server_ip, other_ip in ((ann, SERVER_A, SERVER_B), (ben, SERVER_B, SERVER_A)):
        assert len(peer.relay_answers) == 1
        assert set(candidate_addresses(peer.relay_answers[0])) >= {server_ip}, peer.relay_answers[0]
        assert set(peer.relay_dropped) <= {other_ip}, peer.relay_dropped
        assert peer.nominated, f"{peer.name}: no nominated pair"
        for local, remote in peer.nominated:
            assert (local[0], remote[0]) == (peer.address, server_ip), peer.nominated

    # The other's picture and sound, through the relay.
    check_media(peers)

    # The server agrees: relay at epoch 2, reached from p2p at epoch 1 by a failure, and it relayed.
    assert view["session"] == session
    assert view["provider"] == {"name": "relay", "epoch": 2}, view
    assert [(h["epoch"], h["provider"], h["reason"]) for h in view["history"]] == [(1, "p2p", "join"), (2, "relay", "failure")], view
    assert sorted(p["name"] for p in view["participants"]) == ["Ann", "Ben"]
    for p in view["participants"]:
        assert p["state"] == "active"
        assert p["health"]["provider"] == "relay" and p["health"]["media"] == "connected", view
    assert sent >= before + 300, f"the relay sent only {sent - before:.0f} packets"
    assert server.process.poll() is None, "tandem serve exited during the call"

    print("\nNAT relay fallback: "
          + ", ".join(f"{p.name} P2P {p.p2p_outcome or 'moved on before failing'}"
                      + (f" after {p.p2p_fail_after_s} s" if p.p2p_fail_after_s is not None else "")
                      + (" (reported)" if p.p2p_reported else "") for p in peers)
          + f"; relay candidates dropped (other subnet): Ann {sorted(set(ann.relay_dropped))}, Ben {sorted(set(ben.relay_dropped))}"
          + f"; relay sent {sent - before:.0f} packets; test body {time.monotonic() - started:.1f} s")
