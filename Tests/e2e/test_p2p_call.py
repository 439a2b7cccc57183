"""Two aiortc peers signal through a running `tandem serve --dev` over wss:// and call each other.

Every packet stays on 127.0.0.0/8: the peers gather only 127.0.0.1 (see the `loopback_ice`
fixture), are given no ICE servers, and drop any other candidate from the SDP they receive.
"""

import asyncio
import secrets

from aiortc import (
    RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection, RTCSessionDescription)

from rtc import (
    VIDEO_SIZE, FlatVideoTrack, Received, SignalingClient, ToneAudioTrack, assert_loopback_sdp, check_media, consume, is_loopback,
    nominated_pairs, only_network, wait_for)

TEST_TIMEOUT_S = 50.0


# --- one peer --------------------------------------------------------------------------------------

class Peer(SignalingClient):
    def __init__(self, name: str, session: str, server, luma: int, hz: float, turn_transport: str | None = None) -> None:
        self.name = name
        self.session = session
        self.server = server
        self.luma = luma
        self.hz = hz
        self.ws = None
        self.welcome = None
        self.epoch = None
        self.polite = None
        self.participant = None
        self.remote_peer = None
        self.offered = False
        self.errors: list = []
        self.switches: list = []
        self.other: list = []
        self.pongs: dict = {}
        self.dropped_candidates = 0
        self.remote_sdps: list = []
        self.received = Received()
        self.connected = asyncio.Event()
        self.failed = asyncio.Event()
        # With a TURN transport, the call may use relayed candidates only, from the ICE servers in welcome.
        self.turn_transport = turn_transport
        self.video = FlatVideoTrack(luma)
        self.audio = ToneAudioTrack(hz)
        self.tasks: list = []
        self.make_pc(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))

    def make_pc(self, configuration: RTCConfiguration) -> None:
        self.pc = RTCPeerConnection(configuration)
        self.pc.addTrack(self.audio)
        self.pc.addTrack(self.video)

        @self.pc.on("connectionstatechange")
        def _state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()
            elif self.pc.connectionState == "failed":
                self.failed.set()

        @self.pc.on("track")
        def _track(track) -> None:
            self.received.tracks.append(track.kind)
            self.tasks.append(asyncio.ensure_future(consume(track, self.received)))

    async def join(self) -> dict:
        welcome = await self.open(self.server.signal_url, self.server.ssl_context(),
                                  {"type": "join", "session": self.session, "name": self.name})
        if self.turn_transport:
            servers = []
            for entry in welcome["provider"]["iceServers"]:
                urls = [u for u in entry["urls"] if u.startswith("turn:") and u.endswith("transport=" + self.turn_transport)]
                if urls:
                    servers.append(RTCIceServer(urls=urls, username=entry["username"], credential=entry["credential"]))
            assert servers, f"{self.name}: no {self.turn_transport} TURN server in welcome {welcome['provider']}"
            await self.pc.close()
            self.make_pc(RTCConfiguration(
                iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.tasks.append(asyncio.ensure_future(self.read_loop()))
        for peer in welcome["peers"]:
            await self.saw_peer(peer["id"])
        return welcome

    async def saw_peer(self, peer_id: str) -> None:
        self.remote_peer = peer_id
        if not self.polite and not self.offered:
            self.offered = True
            await self.pc.setLocalDescription(await self.pc.createOffer())
            assert_loopback_sdp(self.pc.localDescription.sdp, f"{self.name} offer", relay=bool(self.turn_transport))
            await self.signal("offer", self.pc.localDescription.sdp)

    async def signal(self, kind: str, sdp: str) -> None:
        await self.send({"type": "signal", "to": self.remote_peer,
                         "data": {"kind": kind, "epoch": self.epoch, "sdp": sdp}})

    async def on_signal(self, sender: str, data: dict) -> None:
        assert data.get("epoch") == self.epoch, f"{self.name}: signal for epoch {data.get('epoch')}"
        kind = data.get("kind")
        if kind not in ("offer", "answer"):
            return  # aiortc puts its candidates in the SDP; nothing trickles
        self.remote_peer = sender
        self.remote_sdps.append(data["sdp"])
        sdp, dropped = only_network(data["sdp"])
        self.dropped_candidates += len(dropped)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        if kind == "offer":
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            assert_loopback_sdp(self.pc.localDescription.sdp, f"{self.name} answer", relay=bool(self.turn_transport))
            await self.signal("answer", self.pc.localDescription.sdp)

    def on_pong(self, message: dict) -> None:
        self.pongs[message["t"]] = message

    def on_other(self, message: dict) -> None:
        self.other.append(message)

    async def report_health(self, t: float) -> None:
        await self.send({"type": "health", "epoch": self.epoch, "provider": "p2p", "media": "connected",
                         "rttMs": 1, "lossPct": 0, "jitterMs": 1, "candidateType": "host",
                         "frameHeight": VIDEO_SIZE[1]})
        # Messages from one sender are handled in order: the pong comes after the health report.
        await self.send({"type": "ping", "t": t})

    def state(self):
        return (self.pc.connectionState, self.received, self.errors, self.read_loop_failure())


# --- the test --------------------------------------------------------------------------------------

async def call(server) -> None:
    session = "e2e-" + secrets.token_hex(8)
    ann = Peer("Ann", session, server, luma=200, hz=440)
    ben = Peer("Ben", session, server, luma=60, hz=660)
    peers = (ann, ben)
    try:
        wa = await ann.join()
        wb = await ben.join()

        for peer, welcome in ((ann, wa), (ben, wb)):
            assert welcome["session"] == session
            assert welcome["provider"]["name"] == "p2p"
            assert welcome["provider"]["room"] == session
            assert welcome["provider"]["iceServers"] == [], "the dev server hands out no ICE servers"
        assert wa["peers"] == []
        assert wb["peers"] == [{"id": ann.participant, "name": "Ann"}]
        assert wa["provider"]["epoch"] == wb["provider"]["epoch"]
        # The first joiner is impolite and makes the offer; the later joiner is polite.
        assert ann.polite is False and ben.polite is True

        for peer in peers:
            await wait_for(peer.connected, f"{peer.name} connected", peers)
            assert not peer.failed.is_set()
        assert ann.offered and not ben.offered

        for peer in peers:
            await wait_for(peer.received.enough, f"{peer.name} receiving media", peers)

        check_media(peers)

        # Loopback only, end to end: every SDP seen and every nominated pair.
        for peer in peers:
            assert peer.dropped_candidates == 0
            for sdp in peer.remote_sdps:
                assert_loopback_sdp(sdp, f"{peer.name} remote")
            pairs = nominated_pairs(peer.pc)
            assert pairs, f"{peer.name}: no nominated ICE pair"
            for local, remote in pairs:
                assert is_loopback(local[0]) and is_loopback(remote[0]), f"{peer.name}: pair {local} -> {remote}"

        # Health reports on the p2p provider are accepted without complaint.
        for i, peer in enumerate(peers):
            await peer.report_health(1000 + i)
        for i, peer in enumerate(peers):
            for _ in range(200):
                if 1000 + i in peer.pongs:
                    break
                await asyncio.sleep(0.05)
            assert 1000 + i in peer.pongs, f"{peer.name}: no pong after health"

        view = None
        for _ in range(100):
            view = await asyncio.to_thread(server.admin, "GET", f"/v1/sessions/{session}")
            healths = [p.get("health") or {} for p in view["participants"]]
            if len(healths) == 2 and all(h.get("media") == "connected" for h in healths):
                break
            await asyncio.sleep(0.05)
        assert view["session"] == session
        assert view["provider"] == {"name": "p2p", "epoch": ann.epoch}
        assert sorted(p["id"] for p in view["participants"]) == sorted([ann.participant, ben.participant])
        assert sorted(p["name"] for p in view["participants"]) == ["Ann", "Ben"]
        for p in view["participants"]:
            assert p["state"] == "active"
            assert p["health"]["media"] == "connected", view
            assert p["health"]["provider"] == "p2p"
            assert p["health"]["candidateType"] == "host"

        for peer in peers:
            assert peer.errors == [], f"{peer.name} got errors {peer.errors}"
            assert peer.switches == [], f"{peer.name} saw provider switches {peer.switches}"
            assert peer.read_loop_failure() is None, f"{peer.name}: {peer.read_loop_failure()!r}"
    finally:
        await asyncio.gather(*(peer.close() for peer in peers), return_exceptions=True)


def test_two_aiortc_peers_call_each_other_over_p2p(tandem_server, loopback_ice):
    asyncio.run(asyncio.wait_for(call(tandem_server), TEST_TIMEOUT_S))
    # Gathering went through the loopback-only replacement, and the server is still up.
    assert loopback_ice, "aioice did not gather through get_host_addresses"
    assert tandem_server.process.poll() is None, "tandem serve exited during the call"
