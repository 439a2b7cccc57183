"""The browser client library and the demo page in real headless Chromium.

Each test runs the server and the browsers inside a network namespace of its own whose only interface
is `lo`: Chromium gathers every interface it sees, so this keeps its media on loopback. Chromium gets
fake camera and microphone devices and trusts only the server's own key (the dev certificate's SPKI).
"""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from conftest import REPO_ROOT, _launch
from netns import require_namespaces, setns

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = REPO_ROOT / "artifacts"
MEDIA_TIMEOUT_S = 45


@pytest.fixture
def lo_only_netns():
    """Moves this thread (and the processes it starts) into a fresh namespace with only `lo`."""
    require_namespaces()
    name = f"tandem-e2e-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    original = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        setns(target)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        interfaces = subprocess.run(["ip", "-o", "link"], check=True, capture_output=True, text=True).stdout
        assert [line.split(":")[1].strip() for line in interfaces.splitlines()] == ["lo"], interfaces
        yield name
    finally:
        setns(original)
        os.close(original)
        os.close(target)
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def browser_server(request, tmp_path, lo_only_netns):
    # The TURN-only call runs against the server exactly as `deploy/dev.sh run` starts it (TURN on
    # 127.0.0.1:3478, the SFU stand-in on 8444: free in this namespace), with no TURN flags of the test's.
    yield from _launch(request, tmp_path, turn=False, dev_sh="turn" in request.node.name)


def spki_pin(certificate: Path) -> str:
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


class Page:
    """One headless Chromium showing the demo page."""

    def __init__(self, server, tmp_path: Path, label: str, *, fake_media: bool = True, width: int = 1280, height: int = 800):
        self.label = label
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in [
            "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
            f"--user-data-dir={tmp_path / ('chrome-' + label)}",
            f"--ignore-certificate-errors-spki-list={spki_pin(server.data_dir / 'certs' / 'server.pem')}",
            "--allow-loopback-in-peer-connection", f"--window-size={width},{height}",
            "--autoplay-policy=no-user-gesture-required",
        ]:
            options.add_argument(argument)
        if fake_media:
            options.add_argument("--use-fake-device-for-media-stream")
            options.add_argument("--use-fake-ui-for-media-stream")
        else:
            options.add_argument("--deny-permission-prompts")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.server = server

    def open(self, **query):
        path = "/?" + "&".join(f"{k}={v}" for k, v in query.items())
        self.driver.get(self.server.base_url + path)

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def demo(self):
        return self.js("return window.tandemDemo && {state: tandemDemo.call?.state ?? null, error: tandemDemo.error,"
                       " participant: tandemDemo.call?.participant ?? null, provider: tandemDemo.call?.provider ?? null,"
                       " frames: tandemDemo.call?.stats?.framesDecoded ?? 0, candidate: tandemDemo.call?.stats?.candidateType ?? null}")

    def events(self, type_: str | None = None) -> list[dict]:
        events = self.js("return window.tandemDemo ? tandemDemo.events : []") or []
        return [e for e in events if type_ is None or e["type"] == type_]

    def wait(self, what: str, predicate, timeout: float = MEDIA_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.demo()
            if last and predicate(last):
                return last
            time.sleep(0.25)
        raise AssertionError(f"{self.label}: {what} not reached within {timeout:.0f} s; last {last};"
                             f" events {json.dumps(self.events())[-2000:]}; paths {self.paths()}\n{self.console()}")

    def paths(self):
        return self.js("return tandemDemo.call ? [...tandemDemo.call.paths.values()].map(p => ({id: p.id, to: p.remote, polite: p.polite,"
                       " connection: p.pc.connectionState, ice: p.pc.iceConnectionState, signaling: p.pc.signalingState,"
                       " gathering: p.pc.iceGatheringState, local: p.pc.localDescription?.sdp?.length,"
                       " remote: p.pc.remoteDescription?.sdp?.length, trace: p.trace.join(', ')})) : null")

    def frames_grow(self, by: int = 15, timeout: float = MEDIA_TIMEOUT_S) -> int:
        start = self.demo()["frames"]
        self.wait(f"{by} more decoded frames than {start}", lambda d: d["frames"] >= start + by, timeout)
        return start

    def console(self) -> str:
        try:
            return "\n".join(entry["message"] for entry in self.driver.get_log("browser")[-30:])
        except Exception as error:  # the log is a diagnostic only
            return f"(no browser log: {error})"

    def close(self):
        try:
            self.driver.quit()
        except Exception:
            pass


@pytest.fixture
def pages(browser_server, tmp_path):
    opened: list[Page] = []

    def open_page(label: str, **kwargs) -> Page:
        page = Page(browser_server, tmp_path, label, **kwargs)
        opened.append(page)
        return page

    yield open_page
    for page in opened:
        page.close()


def wait_for_health(server, session: str, predicate, timeout: float = 15) -> list[dict]:
    """Waits until the server's view of every participant's last health report satisfies `predicate`."""
    deadline = time.monotonic() + timeout
    while True:
        healths = [p.get("health") or {} for p in server.admin("GET", f"/v1/sessions/{session}")["participants"]]
        if healths and all(predicate(h) for h in healths):
            return healths
        assert time.monotonic() < deadline, f"the server's health view never matched: {healths}"
        time.sleep(0.5)


def join_pair(pages, session: str, **query) -> tuple[Page, Page]:
    ann, bob = pages("ann"), pages("bob")
    ann.open(session=session, name="Ann", autojoin=1, video=360, **query)
    ann.wait("waiting alone", lambda d: d["state"] == "waiting")
    bob.open(session=session, name="Bob", autojoin=1, video=360, **query)
    for page in (ann, bob):
        try:
            page.wait("connected", lambda d: d["state"] == "connected")
        except AssertionError as error:
            raise AssertionError(f"{error}\nann paths: {ann.paths()}\nbob paths: {bob.paths()}") from None
    # Frames decoded on both sides, from each other.
    for page in (ann, bob):
        page.frames_grow()
    return ann, bob


def test_two_pages_see_each_other(pages, browser_server):
    ann, bob = join_pair(pages, "browser-pair")
    a, b = ann.demo(), bob.demo()
    assert a["provider"]["name"] == b["provider"]["name"] == "p2p"
    assert a["provider"]["epoch"] == b["provider"]["epoch"] == 1
    assert a["provider"]["polite"] != b["provider"]["polite"], "perfect negotiation needs one polite side"
    assert a["candidate"] == "host" and b["candidate"] == "host"
    # The remote stream is on screen and the peers know each other by name.
    for page, other in ((ann, "Bob"), (bob, "Ann")):
        assert page.js("return document.getElementById('remote-video').videoWidth") > 0
        # Ann saw Bob join; Bob found Ann in his welcome (an event of the join itself).
        assert [e["peer"]["name"] for e in page.events("peer") if e["change"] == "joined"] == [other]

    # The server hears the clients' health reports (on each change and each heartbeat): connected on
    # epoch 1, with the figures getStats gave.
    def reported(health: dict) -> bool:
        return (health.get("media") == "connected" and health.get("epoch") == 1 and health.get("provider") == "p2p"
                and health.get("candidateType") == "host" and "rttMs" in health)
    healths = wait_for_health(browser_server, "browser-pair", reported)
    assert len(healths) == 2

    ARTIFACTS.mkdir(exist_ok=True)
    bob.wait("the status panel filled in", lambda d: d["frames"] > 0)
    time.sleep(1.5)  # one more stats tick so the panel shows bitrate and round trip
    bob.driver.save_screenshot(str(ARTIFACTS / "demo-two-participants.png"))


def test_forced_switch_moves_both_pages_together(pages, browser_server):
    ann, bob = join_pair(pages, "browser-switch")
    answer = browser_server.admin("POST", "/v1/sessions/browser-switch/provider", {"name": "p2p"})
    assert answer["provider"] == {"name": "p2p", "epoch": 2}
    for page in (ann, bob):
        page.wait("epoch 2", lambda d: d["provider"]["epoch"] == 2)
        switch = [e for e in page.events("provider") if e["epoch"] == 2]
        assert len(switch) == 1 and switch[0]["reason"] == "admin", switch
    # Media flows again after the ICE restart, and both report connected on the new epoch.
    for page in (ann, bob):
        page.wait("connected on epoch 2", lambda d: d["state"] == "connected")
        page.frames_grow()
    wait_for_health(browser_server, "browser-switch", lambda h: h.get("epoch") == 2 and h.get("media") == "connected")
    view = browser_server.admin("GET", "/v1/sessions/browser-switch")
    assert [h["epoch"] for h in view["history"]] == [1, 2]


def test_the_failure_button_moves_the_session_once(pages, browser_server):
    ann, bob = join_pair(pages, "browser-failure")
    ann.js("document.getElementById('fail').click()")
    for page in (ann, bob):
        page.wait("epoch 2", lambda d: d["provider"]["epoch"] == 2)
    # Bob's own report of the same failure arrives late, for epoch 1: it must not move the session again.
    bob.js("tandemDemo.call.socket.send(JSON.stringify({type: 'health', epoch: 1, provider: 'p2p', media: 'failed'}))")
    relayed = 'tandem_relay_packets_total{direction="out"}'
    before = browser_server.metric(relayed)
    for page in (ann, bob):
        # The old peer-to-peer path keeps the page connected until the relay's carries media and
        # replaces it: wait for that, so the frames counted next come through the relay.
        page.wait("only the relay's path left", lambda d: [p["to"] for p in page.paths()] == ["server"])
        page.wait("connected again", lambda d: d["state"] == "connected")
        page.frames_grow()
    view = browser_server.admin("GET", "/v1/sessions/browser-failure")
    # The fallback after p2p is the server's media relay: both pages now send their media to Tandem.
    assert [(h["epoch"], h["provider"], h["reason"]) for h in view["history"]] == [(1, "p2p", "join"), (2, "relay", "failure")]
    for page in (ann, bob):
        assert [(e["epoch"], e["name"], e["reason"]) for e in page.events("provider")] == [(1, "p2p", "join"), (2, "relay", "failure")]
    assert browser_server.wait_metric(relayed, before + 100) >= before + 100, "the pages' media did not go through the relay"
    assert browser_server.metric("tandem_relay_legs_connected_total") == 2


def test_a_call_through_tandems_turn_only(pages, browser_server):
    """Two tabs with `iceTransportPolicy: "relay"` (the demo's `?ice=relay`) against `deploy/dev.sh run`."""
    to_clients = 'tandem_turn_packets_total{direction="to_client"}'
    assert browser_server.turn_port == 3478
    assert "TURN relays to loopback peers" in browser_server.stderr_text()
    ann, bob = join_pair(pages, "browser-turn", ice="relay")
    for page in (ann, bob):
        assert page.demo()["candidate"] == "relay", page.demo()
    before = browser_server.metric(to_clients)
    for page in (ann, bob):
        page.frames_grow()
    assert browser_server.wait_metric(to_clients, before + 100) >= before + 100, "the media did not go through Tandem's TURN"
    wait_for_health(browser_server, "browser-turn", lambda h: h.get("candidateType") == "relay")


def test_a_dropped_socket_resumes_and_media_continues(pages, browser_server):
    ann, bob = join_pair(pages, "browser-resume")
    before = ann.demo()["participant"]
    ann.js("tandemDemo.call.dropSignaling()")
    ann.wait("reconnecting, then connected again", lambda d: any(
        e["type"] == "state" and e["state"] == "reconnecting" for e in ann.events()) and d["state"] == "connected")
    assert ann.demo()["participant"] == before, "the resume kept the participant"
    assert not [e for e in ann.events("error") if e.get("code") == "resume_failed"]
    changes = []
    deadline = time.monotonic() + MEDIA_TIMEOUT_S
    while time.monotonic() < deadline:
        changes = [e["change"] for e in bob.events("peer") if e["peer"]["id"] == before and e["change"] in ("reconnecting", "active")]
        if changes[-2:] == ["reconnecting", "active"]:
            break
        time.sleep(0.25)
    assert changes[-2:] == ["reconnecting", "active"], changes
    # Media never depended on the socket: both keep decoding.
    for page in (ann, bob):
        page.frames_grow()
    assert not [e for e in bob.events("peer") if e["change"] == "left"]


def test_a_third_page_is_told_the_session_is_full(pages, browser_server):
    ann, bob = join_pair(pages, "browser-full")
    carol = pages("carol", width=390, height=844)
    carol.open(session="browser-full", name="Carol", autojoin=1, video=240)
    carol.wait("the join refused", lambda d: d["error"] is not None, timeout=20)
    assert carol.demo()["error"]["code"] == "session_full"
    message = carol.js("return document.getElementById('lobby-error').textContent")
    assert "already has two people" in message
    assert carol.js("return document.getElementById('lobby-error').hidden") is False
    ARTIFACTS.mkdir(exist_ok=True)
    carol.driver.save_screenshot(str(ARTIFACTS / "demo-session-full-phone.png"))
    # The two inside carry on undisturbed.
    for page in (ann, bob):
        assert page.demo()["state"] == "connected"
        page.frames_grow()
    view = browser_server.admin("GET", "/v1/sessions/browser-full")
    assert sorted(p["name"] for p in view["participants"]) == ["Ann", "Bob"]


def test_refused_camera_gets_a_clear_message(pages):
    page = pages("denied", fake_media=False)
    page.open(session="browser-denied", autojoin=1)
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline:
        text = page.js("return document.getElementById('lobby-error').textContent") or ""
        if text:
            break
        time.sleep(0.2)
    assert "refused" in text or "No camera" in text, text
    assert page.js("return document.getElementById('lobby').hidden") is False
