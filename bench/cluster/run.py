#!/usr/bin/env python3
"""Many nodes: what crossing a cluster link costs, against staying on one node, on one PostgreSQL store.

Starts PostgreSQL (Debian's binaries, as Tests/e2e/postgres.py does) and two `tandem serve` nodes on it
(release build unless TANDEM_BIN says otherwise), then measures, each for both participants of a session
on the same node and on different nodes:
  joins/s    sessions joined (both participants, at once) with --concurrency sessions in flight;
  signal     the time from one participant's `signal` to the other's receiving it (p50, p99), over
             --signals signals one at a time per pair, --pairs pairs at once;
  switch     an operator's switch through the home's admin API until both participants hold the
             `provider` message (p50, p99), one session at a time.

    swift build -c release --product tandem
    .venv/bin/python bench/cluster/run.py [--sessions 500] [--pairs 20] [--signals 200] [--switches 100]

The clients, both nodes and PostgreSQL share the machine's cores; the figures include the clients' own
time to read the messages.
"""

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import ssl
from pathlib import Path

from websockets.asyncio.client import connect

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "Tests" / "e2e"))
import postgres  # noqa: E402  (the e2e tests' PostgreSQL fixture, as a plain module)

SECRET = "bench-cluster-secret-0123456789"
SERVING = re.compile(r"serving https://127\.0\.0\.1:(\d+)")
API_KEY = re.compile(r"admin API key for this run: (\S+)")


class Node:
    def __init__(self, binary: Path, work: Path, name: str, store: str):
        self.name = name
        self.data = work / name
        self.data.mkdir()
        self.log = open(work / f"{name}.log", "wb")
        self.process = subprocess.Popen(
            [str(binary), "serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir", str(self.data), "--store", store,
             "--cluster-secret", SECRET, "--node", name, "--log-level", "notice", "--rate-limit", "10000",
             "--rate-burst", "10000", "--max-participants", "2"],
            stdout=subprocess.DEVNULL, stderr=self.log, cwd=work)
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            text = (work / f"{name}.log").read_text(errors="replace")
            if SERVING.search(text) and API_KEY.search(text):
                break
            time.sleep(0.05)
        else:
            self.stop()
            sys.exit(f"{name} did not start:\n{text}")
        self.port = int(SERVING.search(text)[1])
        self.key = API_KEY.search(text)[1]
        self.ssl = ssl.create_default_context(cafile=str(self.data / "certs" / "ca.pem"))

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/v1/signal"

    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.port}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=self.ssl, timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def join(node: Node, session: str) -> tuple:
    ws = await connect(node.url, ssl=node.ssl, server_hostname="localhost", open_timeout=30, max_queue=None)
    await ws.send(json.dumps({"type": "join", "session": session}))
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if message["type"] == "welcome":
            return ws, message
        if message["type"] == "error":
            raise RuntimeError(f"join {session} through {node.name}: {message}")


async def next_of(ws, kind: str) -> dict:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if message["type"] == kind:
            return message


async def pair(a_node: Node, b_node: Node, session: str) -> tuple:
    (a, wa), (b, wb) = await asyncio.gather(join(a_node, session), join(b_node, session))
    return a, b, wa, wb


async def close(*sockets) -> None:
    for ws in sockets:
        try:
            await ws.send(json.dumps({"type": "leave"}))
            await ws.close()
        except Exception:
            pass


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def joins_per_second(a_node: Node, b_node: Node, prefix: str, sessions: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)
    opened = []

    async def one(i: int):
        async with gate:
            opened.append(await pair(a_node, b_node, f"{prefix}-{i}"))

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(sessions)))
    elapsed = time.perf_counter() - started
    for a, b, _, _ in opened:
        await close(a, b)
    return 2 * sessions / elapsed


async def signal_latency(a_node: Node, b_node: Node, prefix: str, pairs: int, signals: int) -> list[float]:
    opened = await asyncio.gather(*(pair(a_node, b_node, f"{prefix}-{i}") for i in range(pairs)))
    samples: list[float] = []

    async def run(a, b, wa, wb):
        for n in range(signals):
            sent = time.perf_counter()
            await a.send(json.dumps({"type": "signal", "to": wb["participant"],
                                     "data": {"kind": "offer", "sdp": "v=0", "epoch": wa["provider"]["epoch"], "n": n}}))
            while (await next_of(b, "signal"))["data"]["n"] != n:
                pass
            samples.append((time.perf_counter() - sent) * 1000)

    await asyncio.gather(*(run(*p) for p in opened))
    for a, b, _, _ in opened:
        await close(a, b)
    return samples


async def switch_latency(a_node: Node, b_node: Node, prefix: str, switches: int) -> list[float]:
    samples: list[float] = []
    loop = asyncio.get_running_loop()
    for i in range(switches):
        a, b, wa, _ = await pair(a_node, b_node, f"{prefix}-{i}")
        # The admin API switches a session on its home node.
        admin = a_node if wa["server"]["node"] == a_node.name else b_node
        started = time.perf_counter()
        request = loop.run_in_executor(None, admin.admin, "POST", f"/v1/sessions/{prefix}-{i}/provider", {"name": "p2p"})
        await asyncio.gather(next_of(a, "provider"), next_of(b, "provider"))
        samples.append((time.perf_counter() - started) * 1000)
        await request
        await close(a, b)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--signals", type=int, default=200)
    parser.add_argument("--switches", type=int, default=100)
    args = parser.parse_args()
    binary = Path(os.environ.get("TANDEM_BIN", str(REPO / ".build" / "release" / "tandem")))
    if not binary.is_file():
        sys.exit(f"no tandem at {binary}: swift build -c release --product tandem")

    database = postgres.start()
    work = Path(tempfile.mkdtemp(prefix="tandem-bench-cluster-"))
    nodes = []
    try:
        n1 = Node(binary, work, "n1", database.url())
        nodes.append(n1)
        n2 = Node(binary, work, "n2", database.url())
        nodes.append(n2)

        async def run():
            print(f"{'':24} {'joins/s':>9} {'signal p50':>11} {'p99':>8} {'switch p50':>11} {'p99':>8}  (ms)")
            for label, a_node, b_node in (("one node", n1, n1), ("across two nodes", n1, n2)):
                tag = "same" if a_node is b_node else "cross"
                rate = await joins_per_second(a_node, b_node, f"j-{tag}", args.sessions, args.concurrency)
                signals = await signal_latency(a_node, b_node, f"s-{tag}", args.pairs, args.signals)
                switches = await switch_latency(a_node, b_node, f"w-{tag}", args.switches)
                print(f"{label:24} {rate:9.0f} {statistics.median(signals):11.2f} {percentile(signals, 99):8.2f} "
                      f"{statistics.median(switches):11.2f} {percentile(switches, 99):8.2f}", flush=True)

        asyncio.run(run())
    finally:
        for node in nodes:
            node.stop()
        database.stop()


if __name__ == "__main__":
    main()
