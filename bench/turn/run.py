#!/usr/bin/env python3
"""TURN benchmark: Tandem's TURN service next to coturn, same load, same run.

Each server runs alone in a network namespace this script makes (loopback only), with coturn's own
load tools beside it: turnutils_peer echoes, turnutils_uclient sends. The server forwards every
packet twice (client -> peer, peer -> client). For each load the script prints forwarded packets per
second, loss, and the server's CPU per forwarded packet (from /proc, user + system). Then it holds
1 000 allocations open and prints allocations per second and RSS per allocation.

Needs root (ip netns), coturn (turnserver, turnutils_*) and a release build of tandem:
    swift build -c release --product tandem
    sudo bench/turn/run.py [--clients 10,20,40,80] [--messages 10000] [--sizes 172,1200]

Client and server share the machine's cores, so compare the two servers within one run only; the
script alternates them for each load.
"""

import argparse
import os
import re
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECRET = "bench-secret"
TURN_PORT = 3478
PEER_PORT = 3480
CLK_TCK = os.sysconf("SC_CLK_TCK")

SENT = re.compile(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
LOST = re.compile(r"Total lost packets (\d+)")


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kw)


class Namespace:
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        sh("ip", "netns", "del", self.name, check=False)
        sh("ip", "netns", "add", self.name)
        sh("ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc):
        sh("ip", "netns", "del", self.name, check=False)

    def prefix(self):
        return ["ip", "netns", "exec", self.name]

    def popen(self, args, **kw):
        return subprocess.Popen(self.prefix() + args, **kw)

    def run(self, args, timeout):
        return subprocess.run(self.prefix() + args, capture_output=True, text=True, timeout=timeout)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def server_pid(process):
    """The server's own pid: `ip netns exec` execs it, so it is the child we started."""
    return process.pid


def start_tandem(ns, workdir):
    binary = REPO / ".build" / "release" / "tandem"
    if not binary.is_file():
        sys.exit(f"no release build at {binary}: swift build -c release --product tandem")
    log = open(workdir / "tandem.log", "w")
    process = ns.popen([
        str(binary), "serve", "--no-tls", "--secret", "x", "--store", "memory", "--listen", "127.0.0.1:0",
        "--data-dir", str(workdir), "--turn-listen", f"127.0.0.1:{TURN_PORT}", "--turn-secret", SECRET,
        "--turn-realm", "bench", "--turn-allow-loopback-peers", "--turn-user-quota", "0", "--turn-allocate-rate", "0",
        "--log-level", "notice"], stdout=log, stderr=log)
    wait_for_log(workdir / "tandem.log", "turn listening", process)
    return process


def start_coturn(ns, workdir):
    log = workdir / "coturn.log"
    process = ns.popen([
        "turnserver", "-n", "--listening-ip", "127.0.0.1", "--listening-port", str(TURN_PORT), "--relay-ip", "127.0.0.1",
        "--use-auth-secret", "--static-auth-secret", SECRET, "--realm", "bench", "--allow-loopback-peers",
        "--no-tls", "--no-dtls", "--no-cli", "--min-port", "49152", "--max-port", "65535",
        "--log-file", str(log), "--simple-log", "--no-stdout-log", "--pidfile", str(workdir / "coturn.pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    if process.poll() is not None:
        sys.exit(f"turnserver exited: {log.read_text() if log.exists() else ''}")
    return process


def wait_for_log(path, text, process, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        if process.poll() is not None:
            sys.exit(f"server exited: {path.read_text()}")
        time.sleep(0.05)
    sys.exit(f"server did not start: {path.read_text()}")


def uclient(ns, clients, messages, size, extra=()):
    args = ["turnutils_uclient", "-W", SECRET, "-u", "bench", "-e", "127.0.0.1", "-r", str(PEER_PORT), "-c", "-z", "1",
            "-m", str(clients), "-n", str(messages), "-l", str(size), "-p", str(TURN_PORT), *extra, "127.0.0.1"]
    return ns.run(args, timeout=600)


def load_point(ns, pid, clients, messages, size):
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    result = uclient(ns, clients, messages, size)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    out = result.stdout + result.stderr
    sent = SENT.findall(out)
    lost = LOST.search(out)
    if not sent or not lost:
        return None
    s, r = map(int, sent[-1])
    forwarded = 2 * r
    return {
        "sent": s, "received": r, "loss_pct": 100.0 * (s - r) / s if s else 100.0,
        "forwarded_per_s": forwarded / (t1 - t0), "cpu_us_per_packet": 1e6 * (cpu1 - cpu0) / forwarded if forwarded else float("nan"),
        "seconds": t1 - t0,
    }


def allocations(ns, pid, count):
    """Holds `count` allocations open (-h), then reads the server's RSS; returns (allocations/s, KB per allocation)."""
    rss0 = rss_kb(pid)
    # stdbuf: uclient's progress lines must arrive when printed, not when its buffer fills.
    args = ["stdbuf", "-oL", "turnutils_uclient", "-W", SECRET, "-u", "bench", "-e", "127.0.0.1", "-r", str(PEER_PORT), "-c", "-z", "1000",
            "-m", str(count), "-n", "2", "-l", "100", "-h", "-p", str(TURN_PORT), "127.0.0.1"]
    t0 = time.monotonic()
    process = ns.popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    connected = None
    deadline = t0 + 120
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    # Wait (never past the deadline) for uclient to report its allocations done and its packets sent.
    while time.monotonic() < deadline:
        if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = process.stdout.readline()
        if not line:
            break
        if "Total connect time" in line and connected is None:
            connected = time.monotonic()
        if "tot_send_msgs=" in line and connected is not None:
            break
    time.sleep(1)
    rss1 = rss_kb(pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    rate = count / (connected - t0) if connected else float("nan")
    return rate, (rss1 - rss0) / count


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="10,20,40,80")
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--sizes", default="172,1200")
    parser.add_argument("--allocations", type=int, default=1000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the benchmark makes network namespaces")
    for tool in ("turnserver", "turnutils_uclient", "turnutils_peer"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install coturn")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    workdir = Path(tempfile.mkdtemp(prefix="tandem-bench-turn-"))
    servers = {}
    with Namespace("tbench-tandem") as ns_t, Namespace("tbench-coturn") as ns_c:
        namespaces = {"tandem": ns_t, "coturn": ns_c}
        peers = [ns.popen(["turnutils_peer", "-L", "127.0.0.1", "-p", str(PEER_PORT)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for ns in namespaces.values()]
        servers["tandem"] = start_tandem(ns_t, workdir)
        servers["coturn"] = start_coturn(ns_c, workdir)
        try:
            print(f"TURN benchmark, {os.cpu_count()} cores, uclient -c -z 1 -n {args.messages}; "
                  f"forwarded = client->peer + peer->client")
            print(f"{'size':>5} {'clients':>7} | {'server':>6} {'fwd pkt/s':>10} {'loss %':>7} {'CPU us/pkt':>10}")
            best = {"tandem": {}, "coturn": {}}
            for size in map(int, args.sizes.split(",")):
                for clients in map(int, args.clients.split(",")):
                    for name in ("tandem", "coturn"):
                        point = load_point(namespaces[name], server_pid(servers[name]), clients, args.messages, size)
                        if point is None:
                            print(f"{size:>5} {clients:>7} | {name:>6} (no totals: uclient failed)")
                            continue
                        print(f"{size:>5} {clients:>7} | {name:>6} {point['forwarded_per_s']:>10.0f} "
                              f"{point['loss_pct']:>7.3f} {point['cpu_us_per_packet']:>10.2f}")
                        if point["loss_pct"] == 0:
                            best[name][size] = max(best[name].get(size, 0), point["forwarded_per_s"])
            print()
            for size in map(int, args.sizes.split(",")):
                t, c = best["tandem"].get(size, 0), best["coturn"].get(size, 0)
                ratio = f"{t / c:.2f}" if c else "n/a"
                print(f"loss-free forwarded pkt/s at {size} B: tandem {t:.0f}, coturn {c:.0f}, ratio {ratio}")
            for name in ("tandem", "coturn"):
                rate, kb = allocations(namespaces[name], server_pid(servers[name]), args.allocations)
                print(f"{name}: {args.allocations} allocations at {rate:.0f}/s, {kb:.1f} KB RSS per allocation")
        finally:
            for process in list(servers.values()) + peers:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
