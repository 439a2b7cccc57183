"""Two aiortc peers call each other through Tandem's media relay (provider `relay`, peer `server`).

Each peer offers to `server`; the relay answers with its ICE credentials, DTLS fingerprint and the
codecs it accepts, connects ICE and DTLS-SRTP to each peer, and forwards RTP and RTCP from one leg to
the other with its own SSRCs. Every packet stays on 127.0.0.1 (see `loopback_ice`).
"""

import asyncio
import secrets

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from rtc import (
    MIN_AUDIO_FRAMES, MIN_VIDEO_FRAMES, FlatVideoTrack, Received, SignalingClient, ToneAudioTrack, candidate_from_init, consume,
    is_loopback, media_flows, nominated_pairs, wait_for)

CALL_TIMEOUT_S = 30.0
TEST_TIMEOUT_S = 60.0


class RelayPeer(SignalingClient):
    """A participant whose media goes to the server's relay: it offers to `server`, as the client library does."""

    def __init__(self, name: str, session: str, server, luma: int, hz: float, providers=("relay",), video: bool = True) -> None:
        self.name, self.session, self.server = name, session, server
        self.providers = list(providers)
        self.luma = luma
        self.ws = None
        self.participant = None
        self.provider = None
        self.epoch = None
        self.errors: list = []
        self.switches: list = []
        self.answers: list = []
        # The kinds of the server's signals, in order: the relay's trickle is checked through them.
        self.server_kinds: list = []
        self.received = Received()
        self.connected = asyncio.Event()
        self.tasks: list = []
        self.video = FlatVideoTrack(luma)
        self.audio = ToneAudioTrack(hz)
        self.pc = None
        self.with_video = video
        self.offers: list = []

    def make_pc(self) -> None:
        self.connected.clear()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.pc.addTrack(self.audio)
        if self.with_video:
            self.pc.addTrack(self.video)
        pc = self.pc

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc is self.pc and pc.connectionState == "connected":
                self.connected.set()

        @pc.on("track")
        def _track(track) -> None:
            self.received.tracks.append(track.kind)
            self.tasks.append(asyncio.ensure_future(consume(track, self.received)))

    async def join(self, token: str | None = None) -> dict:
        join = {"type": "join", "session": self.session, "name": self.name, "providers": self.providers}
        if token:
            join["token"] = token
        welcome = await self.open(self.server.signal_url, self.server.ssl_context(), join)
        self.tasks.append(asyncio.ensure_future(self.read_loop()))
        return welcome

    async def offer_to_server(self) -> None:
        """Opens a fresh peer connection to the relay for the current epoch and offers."""
        if self.pc is not None:
            await self.pc.close()
        self.make_pc()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self.send({"type": "signal", "to": "server",
                         "data": {"kind": "offer", "epoch": self.epoch, "sdp": self.pc.localDescription.sdp}})

    async def on_signal(self, sender: str, data: dict) -> None:
        assert sender == "server", f"{self.name}: a signal from {sender} while on the relay"
        if data.get("epoch") != self.epoch:
            return
        kind = data.get("kind")
        self.server_kinds.append(kind)
        if kind == "answer":
            self.answers.append(data["sdp"])
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="answer"))
        elif kind == "offer":
            # The relay renegotiates: answer on the same connection.
            self.offers.append(data["sdp"])
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await self.send({"type": "signal", "to": "server",
                             "data": {"kind": "answer", "epoch": self.epoch, "sdp": self.pc.localDescription.sdp}})
        elif kind == "candidate":
            candidate = candidate_from_init(data["candidate"])
            if is_loopback(candidate.ip):
                await self.pc.addIceCandidate(candidate)
        elif kind == "end-of-candidates":
            await self.pc.addIceCandidate(None)

    async def on_provider(self, message: dict) -> None:
        self.provider = message["name"]
        self.epoch = message["epoch"]
        if self.provider == "relay":
            await self.offer_to_server()

    def state(self):
        return (self.pc.connectionState if self.pc else None, self.received, self.errors, self.switches, self.read_loop_failure())


async def relay_call(server) -> None:
    session = "relay-" + secrets.token_hex(8)
    ann = RelayPeer("Ann", session, server, luma=200, hz=440)
    ben = RelayPeer("Ben", session, server, luma=60, hz=660)
    peers = (ann, ben)
    try:
        for peer in peers:
            welcome = await peer.join()
            assert welcome["provider"]["name"] == "relay", welcome
            # Towards the server the client is always polite.
            assert welcome["provider"]["polite"] is True
        assert ann.epoch == ben.epoch
        before = server.metric('tandem_relay_packets_total{direction="out"}')
        for peer in peers:
            await peer.offer_to_server()
        await media_flows(peers, "through the relay")

        for peer in peers:
            answer = peer.answers[0]
            # The relay's answer: full ICE, DTLS server to aiortc's actpass, one codec per kind.
            assert "a=setup:passive" in answer and "a=ice-lite" not in answer
            assert "VP8/90000" in answer and "opus/48000/2" in answer
            assert "a=fingerprint:sha-256 " in answer
            relay_addresses = {(line.split()[4], int(line.split()[5])) for line in answer.splitlines() if line.startswith("a=candidate:")}
            assert relay_addresses and {a for a, _ in relay_addresses} == {"127.0.0.1"}, answer
            # Host candidates came in the answer, and the relay said at once that there are no more.
            assert peer.server_kinds[:2] == ["answer", "end-of-candidates"], peer.server_kinds
            pairs = nominated_pairs(peer.pc)
            assert pairs, f"{peer.name}: no nominated ICE pair"
            for local, remote in pairs:
                # Each peer's ICE pair ends at one of the relay's own candidates.
                assert is_loopback(local[0]) and remote in relay_addresses, (pairs, relay_addresses)
            assert peer.errors == [], f"{peer.name} got errors {peer.errors}"
            assert peer.switches == []
            assert peer.read_loop_failure() is None, f"{peer.name}: {peer.read_loop_failure()!r}"

        # The server's own counters prove the media went through it.
        sent = server.wait_metric('tandem_relay_packets_total{direction="out"}', before + 2 * (MIN_VIDEO_FRAMES + MIN_AUDIO_FRAMES))
        received = server.metric('tandem_relay_packets_total{direction="in"}')
        assert received >= sent
        assert server.metric("tandem_relay_legs") == 2
        assert server.metric("tandem_relay_legs_connected_total") >= 2
        view = await asyncio.to_thread(server.admin, "GET", f"/v1/sessions/{session}")
        assert view["provider"] == {"name": "relay", "epoch": ann.epoch}
        # The relay's own figures per leg, from its counters and the peers' RTCP receiver reports.
        for _ in range(100):
            relays = [p.get("relay") or {} for p in view["participants"]]
            if len(relays) == 2 and all(r.get("packetsOut", 0) > 0 and r.get("rttMs") is not None for r in relays):
                break
            await asyncio.sleep(0.1)
            view = await asyncio.to_thread(server.admin, "GET", f"/v1/sessions/{session}")
        for p in view["participants"]:
            r = p["relay"]
            assert r["packetsIn"] > 0 and r["packetsOut"] > 0 and r["bytesOut"] > r["packetsOut"] * 20, r
            assert r["lossPct"] is not None and r["lossPct"] < 5, r
            assert r["rttMs"] is not None and 0 <= r["rttMs"] < 1000, r
    finally:
        await asyncio.gather(*(peer.close() for peer in peers), return_exceptions=True)
    # Leaving tears the legs down.
    server.wait_metric_at_most("tandem_relay_legs", 0)


def test_two_aiortc_peers_talk_through_the_relay(tandem_server, loopback_ice):
    asyncio.run(asyncio.wait_for(relay_call(tandem_server), TEST_TIMEOUT_S))
    assert tandem_server.process.poll() is None, "tandem serve exited during the call"


async def admin_switch(server) -> None:
    session = "relay-admin-" + secrets.token_hex(6)
    ann = RelayPeer("Ann", session, server, luma=200, hz=440, providers=("p2p", "relay"))
    ben = RelayPeer("Ben", session, server, luma=60, hz=660, providers=("p2p", "relay"))
    peers = (ann, ben)
    try:
        for peer in peers:
            welcome = await peer.join()
            assert welcome["provider"]["name"] == "p2p"
        answer = await asyncio.to_thread(server.admin, "POST", f"/v1/sessions/{session}/provider", {"name": "relay"})
        assert answer["provider"] == {"name": "relay", "epoch": 2}
        # Each peer hears the switch once and offers to the relay for epoch 2.
        await media_flows(peers, "through the relay")
        for peer in peers:
            assert [(s["name"], s["epoch"], s["reason"]) for s in peer.switches] == [("relay", 2, "admin")]
            assert peer.errors == []
    finally:
        await asyncio.gather(*(peer.close() for peer in peers), return_exceptions=True)


def test_an_admin_switch_moves_a_session_onto_the_relay(tandem_server, loopback_ice):
    asyncio.run(asyncio.wait_for(admin_switch(tandem_server), TEST_TIMEOUT_S))


async def audio_only_call(server) -> None:
    session = "relay-audio-" + secrets.token_hex(6)
    ann = RelayPeer("Ann", session, server, luma=200, hz=440, video=False)
    ben = RelayPeer("Ben", session, server, luma=60, hz=660)
    peers = (ann, ben)
    try:
        for peer in peers:
            await peer.join()
        for peer in peers:
            await peer.offer_to_server()
        for peer in peers:
            await wait_for(peer.connected, f"{peer.name} connected to the relay", peers)
        # Ann offered audio only; the relay offers her a video section so that she sees Ben.
        for _ in range(100):
            if ann.offers and ann.received.video_frames >= MIN_VIDEO_FRAMES and ben.received.audio_frames >= MIN_AUDIO_FRAMES:
                break
            await asyncio.sleep(0.1)
        assert len(ann.offers) == 1, ann.offers
        assert "m=video" in ann.offers[0] and "a=sendonly" in ann.offers[0]
        assert "m=video" not in ann.answers[0], "Ann's own offer had no video"
        assert ben.offers == [], "Ben offered both kinds: nothing to add"
        assert sorted(ann.received.tracks) == ["audio", "video"], ann.received.tracks
        assert ann.received.video_frames >= MIN_VIDEO_FRAMES and abs(ann.received.video_luma - ben.luma) < 25, ann.received
        assert ann.received.audio_peak > 2000
        assert ben.received.audio_frames >= MIN_AUDIO_FRAMES and ben.received.video_frames == 0
        for peer in peers:
            assert peer.errors == [], f"{peer.name} got errors {peer.errors}"
    finally:
        await asyncio.gather(*(peer.close() for peer in peers), return_exceptions=True)


def test_an_audio_only_peer_is_offered_the_other_sides_video(tandem_server, loopback_ice):
    asyncio.run(asyncio.wait_for(audio_only_call(tandem_server), TEST_TIMEOUT_S))
    assert tandem_server.process.poll() is None


async def bad_offers(server) -> None:
    session = "relay-bad-" + secrets.token_hex(6)
    ann = RelayPeer("Ann", session, server, luma=200, hz=440)
    try:
        await ann.join()
        for sdp in ["hello", "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "v=0\r\n" + "a=x\r\n" * 10]:
            await ann.send({"type": "signal", "to": "server", "data": {"kind": "offer", "epoch": ann.epoch, "sdp": sdp}})
        await ann.send({"type": "signal", "to": "server", "data": {"kind": "offer", "epoch": ann.epoch}})
        await ann.send({"type": "signal", "to": "server", "data": {"kind": "offer", "epoch": ann.epoch + 5, "sdp": "v=0"}})
        for _ in range(100):
            if len(ann.errors) >= 5:
                break
            await asyncio.sleep(0.05)
        codes = [e["code"] for e in ann.errors]
        assert codes.count("bad_message") == 4 and codes.count("stale_epoch") == 1, ann.errors
        assert all(e.get("ref") == "signal" for e in ann.errors)
        assert any("bad_sdp" in e["message"] for e in ann.errors)
        # The leg is still usable: a real offer afterwards connects.
        await ann.offer_to_server()
        await wait_for(ann.connected, "Ann connected after bad offers", [ann])
    finally:
        await ann.close()


def test_malformed_offers_get_clear_errors_and_the_leg_still_works(tandem_server, loopback_ice):
    asyncio.run(asyncio.wait_for(bad_offers(tandem_server), TEST_TIMEOUT_S))
    assert tandem_server.process.poll() is None
