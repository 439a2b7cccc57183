#!/usr/bin/env python3
"""Switch propagation: from the report that tips a session over the quality threshold to the moment
every participant holds the `provider` message for the SFU, over many two-party sessions.

Two runs in one go, each against its own `tandem serve` (release build) and a `tandem daily-standin`
that answers after --api-latency-ms, as a real SFU API across the internet would:
  pre-created  --sfu-prepare session-start: the room and tokens exist before the reports come;
  on demand    --sfu-prepare on-demand: the switch waits for the room and both tokens.
Each session joins two WebSocket clients; one sends three bad health reports and the clock starts at
the third. Sessions are switched one at a time, so each figure is one switch alone.

    swift build -c release --product tandem
    .venv/bin/python bench/switch/run.py [--sessions 1000] [--api-latency-ms 40]

The client, the server and the stand-in share the machine's cores; the figures include the client's
own time to read the messages.
"""

import argparse
import asyncio
import json
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.asyncio.client import connect

REPO = Path(__file__).resolve().parents[2]
API_KEY = "bench-daily-key-0123456789"
SERVING = re.compile(r"serving https://127\.0\.0\.1:(\d+)")
BAD = {"type": "health", "epoch": 1, "provider": "p2p", "media": "connected", "rttMs": 650, "lossPct": 1, "jitterMs": 5}


def start_standin(binary: Path, latency_ms: int, rate: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [str(binary), "daily-standin", "--listen", "127.0.0.1:0", "--api-key", API_KEY, "--latency-ms", str(latency_ms),
         "--rate-limit", str(rate), "--delete-rate-limit", str(rate)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    found = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line)
    if not found:
        process.kill()
        sys.exit(f"the stand-in did not start: {line!r}")
    return process, found[1]


def start_tandem(binary: Path, work: Path, api: str, prepare: str, rate: float) -> tuple[subprocess.Popen, int]:
    stderr = open(work / f"tandem-{prepare}.log", "wb")
    process = subprocess.Popen(
        [str(binary), "serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir", str(work / "data"), "--store", "memory",
         "--log-level", "notice", "--sfu-url", api, "--sfu-api-key", API_KEY, "--sfu-prepare", prepare,
         "--sfu-rate-limit", str(rate), "--sfu-delete-rate-limit", str(rate), "--max-candidates", "100",
         "--rate-limit", "1000", "--rate-burst", "1000"],
        stdout=subprocess.DEVNULL, stderr=stderr, cwd=work)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = SERVING.search((work / f"tandem-{prepare}.log").read_text(errors="replace"))
        if found:
            return process, int(found[1])
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    sys.exit(f"tandem serve did not start; see {work}/tandem-{prepare}.log")


def requests_seen(api: str) -> dict:
    with urllib.request.urlopen(api.removesuffix("/v1") + "/_standin/stats", timeout=10) as response:
        return json.loads(response.read())["requests"]


class Participant:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.provider_at: float | None = None
        self.provider: dict | None = None
        self.got = asyncio.Event()
        self.reader = asyncio.ensure_future(self.read())
        self.pinger = asyncio.ensure_future(self.keep_alive())

    async def keep_alive(self) -> None:
        # Sessions wait their turn for many seconds; a silent participant would time out meanwhile.
        while True:
            await asyncio.sleep(4)
            await self.ws.send(json.dumps({"type": "ping", "t": 0}))

    async def read(self) -> None:
        async for text in self.ws:
            message = json.loads(text)
            if message.get("type") == "provider" and self.provider is None:
                self.provider_at = time.perf_counter()
                self.provider = message
                self.got.set()


async def join(url: str, ctx: ssl.SSLContext, session: str) -> Participant:
    ws = await connect(url, ssl=ctx, server_hostname="localhost", max_queue=None)
    await ws.send(json.dumps({"type": "join", "session": session}))
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome", welcome
    return Participant(ws)


async def measure(port: int, ca: Path, api: str, sessions: int, prepare: str, tokens_ahead: bool) -> list[float]:
    ctx = ssl.create_default_context(cafile=str(ca))
    url = f"wss://127.0.0.1:{port}/v1/signal"
    pairs = []
    for i in range(0, sessions, 50):
        batch = await asyncio.gather(*(join(url, ctx, f"{prepare}-{n}") for n in range(i, min(sessions, i + 50)) for _ in range(2)))
        pairs += [(batch[k], batch[k + 1]) for k in range(0, len(batch), 2)]
    if tokens_ahead:
        # Pre-created: wait until the stand-in has made every room and token, then a little for the
        # rooms to hear it.
        while requests_seen(api).get("POST /meeting-tokens", 0) < 2 * sessions:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
    before = requests_seen(api)
    latencies = []
    for a, b in pairs:
        await a.ws.send(json.dumps(BAD))
        await a.ws.send(json.dumps(BAD))
        await a.ws.send(json.dumps(BAD))
        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(a.got.wait(), b.got.wait()), 30)
        assert a.provider["name"] == b.provider["name"] == "sfu" and a.provider["epoch"] == b.provider["epoch"]
        assert a.provider["sfu"]["token"] != b.provider["sfu"]["token"]
        latencies.append((max(a.provider_at, b.provider_at) - start) * 1000)
    calls = {k: v - before.get(k, 0) for k, v in requests_seen(api).items() if v != before.get(k, 0)}
    for a, b in pairs:
        for p in (a, b):
            p.pinger.cancel()
            await p.ws.close()
    print(f"  SFU API calls during the switches: {calls or 'none'}")
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--api-latency-ms", type=int, default=40, help="the stand-in's delay per API call")
    parser.add_argument("--rate-limit", type=float, default=2000,
                        help="requests/s the stand-in allows and the adapter sends (Daily's documented limit is 20/s)")
    parser.add_argument("--tandem", default=str(REPO / ".build/release/tandem"))
    args = parser.parse_args()
    binary = Path(args.tandem)
    if not binary.is_file():
        sys.exit(f"no {binary}: swift build -c release --product tandem")
    print(f"switch propagation: {args.sessions} two-party sessions, SFU API latency {args.api_latency_ms} ms per call, "
          f"rate limits {args.rate_limit:g}/s (raised from Daily's 20/s so that setting up {args.sessions} rooms is quick)")
    results = {}
    with tempfile.TemporaryDirectory(prefix="tandem-bench-switch-") as tmp:
        work = Path(tmp)
        standin, api = start_standin(binary, args.api_latency_ms, args.rate_limit)
        try:
            for label, prepare, ahead in [("pre-created", "session-start", True), ("on demand", "on-demand", False)]:
                tandem, port = start_tandem(binary, work, api, prepare, args.rate_limit)
                try:
                    print(f"{label} (--sfu-prepare {prepare}):")
                    latencies = asyncio.run(measure(port, work / "data/certs/ca.pem", api, args.sessions, prepare, ahead))
                finally:
                    tandem.terminate()
                    tandem.wait(timeout=30)
                results[label] = latencies
                print(f"  p50 {percentile(latencies, 50):.2f} ms  p99 {percentile(latencies, 99):.2f} ms  "
                      f"max {max(latencies):.2f} ms  mean {statistics.fmean(latencies):.2f} ms  (n={len(latencies)})")
        finally:
            standin.terminate()
            standin.wait(timeout=10)
    target = 50.0
    p99 = percentile(results["pre-created"], 99)
    print(f"design target p99 <= {target:g} ms with the room pre-created: {'met' if p99 <= target else 'not met'} ({p99:.2f} ms)")


if __name__ == "__main__":
    main()
