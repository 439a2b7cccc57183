"""Two `tandem serve` nodes on one PostgreSQL server (started by the test): participants of one session
whose sockets land on different nodes meet in one session through the home's cluster link, and when a
home node is killed, they meet again through the survivor."""

import asyncio
import json
import os
import secrets
import signal
import time

import pytest
from websockets.asyncio.client import connect

from conftest import _launch

SECRET = "e2e-cluster-secret-0123456789"
SESSIONS = 40


def _cluster(request, tmp_path, postgres, names):
    """Nodes of these names, each in dev mode with a data directory (and development CA) of its own."""
    launches = []
    nodes = []
    for name in names:
        directory = tmp_path / name
        directory.mkdir()
        launch = _launch(request, directory, turn=False,
                         extra=["--store", postgres.url(), "--cluster-secret", SECRET, "--node", name])
        nodes.append(next(launch))
        launches.append(launch)
    try:
        yield nodes
    finally:
        for launch in launches:
            launch.close()


@pytest.fixture
def cluster(request, tmp_path, postgres):
    yield from _cluster(request, tmp_path, postgres, ("n1", "n2"))


@pytest.fixture
def cluster_of_three(request, tmp_path, postgres):
    yield from _cluster(request, tmp_path, postgres, ("n1", "n2", "n3"))


async def join(node, session: str, name: str, retry_s: float = 0.0) -> tuple:
    """A socket to `node` joined to `session`: (socket, welcome). Refusals are tried again for `retry_s`."""
    deadline = time.monotonic() + retry_s
    while True:
        ws = await connect(node.signal_url, ssl=node.ssl_context(), server_hostname="localhost", open_timeout=10)
        await ws.send(json.dumps({"type": "join", "session": session, "name": name}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if answer["type"] == "welcome":
            return ws, answer
        await ws.close()
        assert answer["type"] == "error", answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} could not join {session} through {node.port}: {answer}")
        await asyncio.sleep(0.3)


async def next_of(ws, kind: str) -> dict:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"] == kind:
            return message


async def meet(a_node, b_node, session: str, retry_s: float = 0.0, a_first: bool = False) -> tuple:
    """Two participants joining at once (or `a_first`) through two nodes; both in one session, on one
    provider and epoch, with opposite p2p roles, signals crossing in order both ways."""
    if a_first:
        a, wa = await join(a_node, session, "a", retry_s)
        b, wb = await join(b_node, session, "b", retry_s)
    else:
        (a, wa), (b, wb) = await asyncio.gather(join(a_node, session, "a", retry_s), join(b_node, session, "b", retry_s))
    assert wa["server"]["node"] == wb["server"]["node"], (wa, wb)
    assert (wa["provider"]["name"], wa["provider"]["epoch"]) == (wb["provider"]["name"], wb["provider"]["epoch"])
    # The later joiner saw the earlier one in its welcome; the earlier hears of the later.
    first, second, first_welcome, second_welcome = (a, b, wa, wb) if wb["peers"] else (b, a, wb, wa)
    assert [p["id"] for p in second_welcome["peers"]] == [first_welcome["participant"]]
    assert (await next_of(first, "peer-joined"))["peer"]["id"] == second_welcome["participant"]
    assert wa["provider"]["polite"] != wb["provider"]["polite"]
    for n in range(10):
        await a.send(json.dumps({"type": "signal", "to": wb["participant"],
                                 "data": {"kind": "offer", "sdp": "v=0", "epoch": wa["provider"]["epoch"], "n": n}}))
        await b.send(json.dumps({"type": "signal", "to": wa["participant"],
                                 "data": {"kind": "offer", "sdp": "v=0", "epoch": wb["provider"]["epoch"], "n": n}}))
    for n in range(10):
        assert (await next_of(b, "signal"))["data"]["n"] == n
        assert (await next_of(a, "signal"))["data"]["n"] == n
    return a, b, wa, wb


def test_participants_on_two_nodes_meet_and_meet_again_when_the_home_dies(cluster, postgres):
    n1, n2 = cluster

    async def run():
        # Every session has one participant through each node: in half of them both join at once, in the
        # other half the one through n1 joins first, so that n1 is home to some whatever the races do.
        pairs = await asyncio.gather(*(meet(n1, n2, f"c{i}") if i % 2 else meet(n1, n2, f"c{i}", a_first=True)
                                       for i in range(SESSIONS)))
        homes = [wa["server"]["node"] for _, _, wa, _ in pairs]
        assert set(homes) <= {"n1", "n2"}
        nodes = n2.admin("GET", "/v1/nodes")["nodes"]
        assert [n["name"] for n in nodes] == ["n1", "n2"]
        view = n2.admin("GET", f"/v1/sessions/c0")
        assert view["home"]["node"] == homes[0] and len(view["participants"]) == 2

        # n1 dies at once. Its sessions come back through n2 once n1's lease has run out (6 s); the
        # sessions homed on n2 carry on.
        n1.process.send_signal(signal.SIGKILL)
        n1.process.wait(timeout=10)
        for a, b, _, _ in pairs:
            await a.close()
            await b.close()
        lost = [i for i, home in enumerate(homes) if home == "n1"]
        assert lost, "no session was homed on n1"
        again = await asyncio.gather(*(meet(n2, n2, f"c{i}", retry_s=20) for i in lost))
        for (_, _, wa, _), i in zip(again, lost):
            assert wa["server"]["node"] == "n2"
            assert n2.admin("GET", f"/v1/sessions/c{i}")["home"]["generation"] >= 2
        for a, b, _, _ in again:
            await a.close()
            await b.close()

    asyncio.run(run())


def test_a_thousand_sessions_across_three_nodes(cluster_of_three):
    """1 000 sessions, each participant through a different node of three (every pairing), joining at
    once, 100 sessions in flight: every pair meets in one session with signals crossing in order."""
    nodes = cluster_of_three
    gate = asyncio.Semaphore(100)
    homes: dict[str, int] = {}

    async def one(i: int):
        async with gate:
            a_node, b_node = nodes[i % 3], nodes[(i + 1 + (i // 3) % 2) % 3]
            a, b, wa, _ = await meet(a_node, b_node, f"k{i}")
            homes[wa["server"]["node"]] = homes.get(wa["server"]["node"], 0) + 1
            await a.close()
            await b.close()

    async def run():
        await asyncio.gather(*(one(i) for i in range(1000)))

    asyncio.run(run())
    assert sum(homes.values()) == 1000 and set(homes) <= {"n1", "n2", "n3"}, homes


def test_a_database_restart_drops_no_call(cluster, postgres):
    """PostgreSQL shut down for 10 s and started again: the established cross-node session carries on
    (signals both ways, pings) while joins are refused, and joins succeed again once it is back."""
    n1, n2 = cluster

    async def exchange(a, b, wa, wb, first: int) -> None:
        for n in range(first, first + 5):
            await a.send(json.dumps({"type": "signal", "to": wb["participant"],
                                     "data": {"kind": "offer", "sdp": "v=0", "epoch": wa["provider"]["epoch"], "n": n}}))
            assert (await next_of(b, "signal"))["data"]["n"] == n
            await b.send(json.dumps({"type": "ping", "t": n}))
            assert (await next_of(b, "pong"))["t"] == n

    async def run():
        a, b, wa, wb = await meet(n1, n2, "pg-restart")
        postgres.shut_down()
        outage_ends = time.monotonic() + 10
        refused = 0
        round_ = 0
        while time.monotonic() < outage_ends:
            await exchange(a, b, wa, wb, first=100 * round_)
            round_ += 1
            ws = await connect(n2.signal_url, ssl=n2.ssl_context(), server_hostname="localhost", open_timeout=10)
            await ws.send(json.dumps({"type": "join", "session": f"during-{round_}"}))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 15))
            refused += answer["type"] == "error"
            await ws.close()
            await asyncio.sleep(1)
        assert refused > 0, "joins that need the store went through while it was down"
        postgres.start_again()
        # Established all along; new sessions again once the nodes reach the store.
        await exchange(a, b, wa, wb, first=10_000)
        c, d, _, _ = await meet(n2, n1, "after-restart", retry_s=30)
        home = n1.admin("GET", "/v1/sessions/pg-restart")["home"]
        assert home["node"] == wa["server"]["node"] and home["generation"] == 1
        for ws in (a, b, c, d):
            await ws.close()

    asyncio.run(run())


def test_a_drained_node_hands_its_sessions_over(cluster):
    """SIGTERM to the home node: its sockets are told to resume (4000), and the participants meet again
    through the other node while the drained one is still stopping, on the same epoch."""
    n1, n2 = cluster

    async def run():
        (a, wa), (b, _) = await asyncio.gather(join(n1, "drained", "a"), join(n1, "drained", "b"))
        assert wa["server"]["node"] == "n1"
        n1.process.send_signal(signal.SIGTERM)
        for ws in (a, b):
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except Exception:
                pass
            assert ws.close_code == 4000, ws.close_code
        a2, b2, wa2, _ = await meet(n2, n2, "drained", retry_s=10)
        assert wa2["server"]["node"] == "n2"
        assert wa2["provider"]["epoch"] == wa["provider"]["epoch"]
        await a2.close()
        await b2.close()

    asyncio.run(run())
    assert n1.process.wait(timeout=15) == 0


def test_an_aiortc_call_whose_peers_signal_through_two_nodes(cluster, loopback_ice):
    """Two aiortc peers, one signalling through each node: the later one's offer and answer cross the
    cluster link, and both receive each other's audio and video."""
    from test_p2p_call import Peer
    from rtc import check_media, wait_for

    n1, n2 = cluster

    async def run():
        session = "call-" + secrets.token_hex(4)
        ann = Peer("Ann", session, n1, luma=200, hz=440)
        ben = Peer("Ben", session, n2, luma=60, hz=660)
        peers = (ann, ben)
        try:
            wa = await ann.join()
            wb = await ben.join()
            assert wa["server"]["node"] == wb["server"]["node"] == "n1"
            assert ann.polite is False and ben.polite is True
            for peer in peers:
                await wait_for(peer.connected, f"{peer.name} connected", peers)
            for peer in peers:
                await wait_for(peer.received.enough, f"{peer.name} receiving media", peers)
            check_media(peers)
            for peer in peers:
                assert peer.errors == [], f"{peer.name} got errors {peer.errors}"
        finally:
            await asyncio.gather(*(peer.close() for peer in peers), return_exceptions=True)

    asyncio.run(asyncio.wait_for(run(), 50))
