"""What the end-to-end tests share: a signaling client's join, read loop, sending and closing, test media and what
peers received of it, loopback and subnet candidate filters, the ICE pairs aiortc nominated, and the
waits and media checks of a call."""

import array
import asyncio
import ipaddress
import json
import math
from dataclasses import dataclass, field

from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack
from aiortc.sdp import candidate_from_sdp
from av import VideoFrame
from websockets.asyncio.client import connect

CALL_TIMEOUT_S = 30.0
MIN_VIDEO_FRAMES = 20
MIN_AUDIO_FRAMES = 50  # 1 s of 20 ms frames
VIDEO_SIZE = (160, 120)
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


# --- signaling --------------------------------------------------------------------------------------

class SignalingClient:
    """Sending, closing and the reader's fate, the same for every test client. A subclass keeps `ws` (its
    socket, once open), and may keep `pc` (its RTCPeerConnection) and `tasks` (its signaling reader
    first)."""

    ws = None
    pc = None
    # A subclass that starts tasks keeps its own list; the class's default is empty and immutable.
    tasks: tuple = ()

    async def send(self, message: dict) -> None:
        await self.ws.send(json.dumps(message))

    async def close(self) -> None:
        """Stops the tasks, closes the peer connection, says `leave` and closes the socket."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.pc is not None:
            await self.pc.close()
        if self.ws is not None:
            try:
                await self.send({"type": "leave"})
            except Exception:
                pass
            await self.ws.close()

    async def open(self, url: str, ssl_context, join: dict) -> dict:
        """Opens the socket, sends `join` and reads the welcome into `welcome`, `participant`, `provider`,
        `epoch` and `polite`; the caller starts `read_loop` when it is ready for what follows."""
        self.ws = await connect(url, ssl=ssl_context, server_hostname="localhost", open_timeout=10)
        await self.send(join)
        welcome = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        assert welcome.get("type") == "welcome", f"{getattr(self, 'name', 'client')}: expected welcome, got {welcome}"
        self.welcome = welcome
        self.participant = welcome["participant"]
        self.provider = welcome["provider"]["name"]
        self.epoch = welcome["provider"]["epoch"]
        self.polite = welcome["provider"]["polite"]
        return welcome

    async def read_loop(self) -> None:
        """Hands every server message to its hook; errors and provider messages are also kept in
        `errors` and `switches` when the client has them."""
        async for raw in self.ws:
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "signal":
                await self.on_signal(message["from"], message["data"])
            elif kind == "peer-joined":
                await self.saw_peer(message["peer"]["id"])
            elif kind == "provider":
                if hasattr(self, "switches"):
                    self.switches.append(message)
                await self.on_provider(message)
            elif kind == "error":
                if hasattr(self, "errors"):
                    self.errors.append(message)
            elif kind == "pong":
                self.on_pong(message)
            else:
                self.on_other(message)

    async def on_signal(self, sender: str, data: dict) -> None:
        pass

    async def saw_peer(self, peer_id: str) -> None:
        pass

    async def on_provider(self, message: dict) -> None:
        pass

    def on_pong(self, message: dict) -> None:
        pass

    def on_other(self, message: dict) -> None:
        pass

    def read_loop_failure(self):
        """The exception that ended the signaling reader (an assertion in it, say), if any."""
        reader = self.tasks[0] if self.tasks else None
        if reader is not None and reader.done() and not reader.cancelled():
            return reader.exception()
        return None


# --- media ---------------------------------------------------------------------------------------

class FlatVideoTrack(VideoStreamTrack):
    """Small flat grey frames at 30 fps whose brightness identifies the sender."""

    def __init__(self, luma: int) -> None:
        super().__init__()
        self.luma = luma

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=VIDEO_SIZE[0], height=VIDEO_SIZE[1], format="yuv420p")
        y, u, v = frame.planes
        y.update(bytes([self.luma]) * y.buffer_size)
        u.update(b"\x80" * u.buffer_size)
        v.update(b"\x80" * v.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        return frame


class ToneAudioTrack(AudioStreamTrack):
    """A sine tone (8 kHz mono, 20 ms frames), so that received audio is distinguishable from silence."""

    def __init__(self, hz: float) -> None:
        super().__init__()
        self.hz = hz

    async def recv(self):
        frame = await super().recv()  # paced silence; pts counts samples
        rate = frame.sample_rate
        samples = array.array("h", (
            int(12000 * math.sin(2 * math.pi * self.hz * (frame.pts + i) / rate)) for i in range(frame.samples)))
        frame.planes[0].update(samples.tobytes())
        return frame


def mean_luma(frame: VideoFrame) -> float:
    plane = frame.planes[0]
    data = bytes(plane)
    width, height, stride = plane.width, plane.height, plane.line_size
    return sum(sum(data[row * stride: row * stride + width]) for row in range(height)) / (width * height)


def audio_peak(frame) -> int:
    channels = len(frame.layout.channels)
    assert frame.format.name == "s16", f"unexpected decoded audio format {frame.format.name}"
    data = bytes(frame.planes[0])[: frame.samples * channels * 2]
    samples = array.array("h", data)
    return max((abs(s) for s in samples), default=0)


@dataclass
class Received:
    video_frames: int = 0
    audio_frames: int = 0
    video_size: tuple = (0, 0)
    video_luma: float = -1.0
    audio_peak: int = 0
    tracks: list = field(default_factory=list)
    enough: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def check(self) -> None:
        if self.video_frames >= MIN_VIDEO_FRAMES and self.audio_frames >= MIN_AUDIO_FRAMES:
            self.enough.set()


async def consume(track, received: Received) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if track.kind == "video":
            received.video_frames += 1
            received.video_size = (frame.width, frame.height)
            received.video_luma = mean_luma(frame)
        else:
            received.audio_frames += 1
            # The decoder's first frames may be concealment; look at the loudest frame seen.
            received.audio_peak = max(received.audio_peak, audio_peak(frame))
        received.check()


# --- loopback SDP ----------------------------------------------------------------------------------

def candidate_addresses(sdp: str) -> list[str]:
    """The connection address of every `a=candidate` line (the fifth field)."""
    return [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]


def in_network(address: str, network=LOOPBACK) -> bool:
    try:
        return ipaddress.ip_address(address) in network
    except ValueError:  # an mDNS name or anything else
        return False


def is_loopback(address: str) -> bool:
    return in_network(address, LOOPBACK)


def only_network(sdp: str, network=LOOPBACK) -> tuple[str, list[str]]:
    """Drops every candidate outside `network`; returns the SDP and the addresses dropped."""
    kept, dropped = [], []
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:") and not in_network(line.split()[4], network):
            dropped.append(line.split()[4])
            continue
        kept.append(line)
    return "\r\n".join(kept), dropped


def candidate_from_init(init: dict):
    """An aiortc candidate from a signalled RTCIceCandidateInit (`{candidate, sdpMid, sdpMLineIndex}`)."""
    candidate = candidate_from_sdp(init["candidate"].split(":", 1)[1])
    candidate.sdpMid = init.get("sdpMid")
    candidate.sdpMLineIndex = init.get("sdpMLineIndex")
    return candidate


def assert_loopback_sdp(sdp: str, who: str, relay: bool = False) -> None:
    """Only 127.0.0.1 candidates: host ones for a direct call, relayed ones (from our TURN) for a relay call."""
    addresses = candidate_addresses(sdp)
    assert addresses, f"{who}: SDP carries no candidates:\n{sdp}"
    assert all(a == "127.0.0.1" for a in addresses), f"{who}: non-loopback candidates {addresses}"
    types = [line.split()[7] for line in sdp.splitlines() if line.startswith("a=candidate:")]
    assert set(types) == {"relay" if relay else "host"}, f"{who}: candidate types {types}"


def nominated_pairs(pc: RTCPeerConnection) -> list[tuple[tuple, tuple]]:
    return [(pair.local_addr, pair.remote_addr) for pair in nominated(pc)]


def nominated(pc: RTCPeerConnection) -> list:
    pairs = []
    for transceiver in pc.getTransceivers():
        ice = transceiver.sender.transport.transport
        pairs.extend(ice._connection._nominated.values())
    return pairs


# --- a call ------------------------------------------------------------------------------------------

async def wait_for(event: asyncio.Event, what: str, peers, timeout: float = CALL_TIMEOUT_S) -> None:
    """Waits for `event`; on timeout, fails with every peer's `state()`."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}: {[(p.name, p.state()) for p in peers]}") from None


async def media_flows(peers, via: str) -> None:
    """Waits until every peer is connected and receives media (`via` names the path), then checks it."""
    for peer in peers:
        await wait_for(peer.connected, f"{peer.name} connected {via}", peers)
    for peer in peers:
        await wait_for(peer.received.enough, f"{peer.name} receiving media {via}", peers)
    check_media(peers)


def check_media(peers) -> None:
    """Each of two peers decoded the other's picture (its luma) and sound (not silence)."""
    ann, ben = peers
    for peer, other in ((ann, ben), (ben, ann)):
        r = peer.received
        assert sorted(r.tracks) == ["audio", "video"], f"{peer.name} got tracks {r.tracks}"
        assert r.video_frames >= MIN_VIDEO_FRAMES and r.audio_frames >= MIN_AUDIO_FRAMES
        assert r.video_size == VIDEO_SIZE, f"{peer.name} decoded {r.video_size}"
        assert abs(r.video_luma - other.luma) < 25, f"{peer.name} sees luma {r.video_luma}, expected {other.luma}"
        assert r.audio_peak > 2000, f"{peer.name} hears only silence (peak {r.audio_peak})"
