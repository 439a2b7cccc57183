#!/usr/bin/env python3
"""TURN benchmark: Tandem's TURN service next to coturn, same load, same run.

Each server runs alone in a network namespace this script makes (loopback only), with coturn's own
load tools beside it: turnutils_peer echoes, turnutils_uclient sends (-z 1: each client sends a
packet every millisecond). The server forwards every packet twice (client -> peer, peer -> client).

For each load the script prints the forwarding rate at the plateau (the best one-second window of the
server namespace's UDP counters: when nothing is lost, a quarter of the datagrams sent there are the
client's, a quarter the peer's echoes and half the server's), the loss uclient saw, and the server's
CPU per forwarded packet (from /proc, user + system, over the whole run). A server's loss-free rate
is its best plateau among the loads it carried without losing a packet; the script stops raising a
server's load after two lossy loads in a row. Then it holds allocations open (uclient processes of
100 each) and prints allocations per second (the clients' pace), the server's CPU per allocation
set-up and RSS per allocation.

Needs root (ip netns), coturn (turnserver, turnutils_*) and a release build of tandem:
    swift build -c release --product tandem
    sudo bench/turn/run.py [--clients 40,60,80,100,120] [--messages 10000] [--sizes 172,1200]
                           [--cpu-budget 0.5]

Client and server share the machine's cores, so compare the two servers within one run only; the
script alternates them for each load. With the load tools and the server on two cores, the ceiling
may be the tools': the drops column says whose sockets overflowed. --cpu-budget caps each server at
that many cores (a CPU cgroup, 10 ms period) so that the server is the bottleneck and the loss-free
rate measures it alone.
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
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECRET = "bench-turn-secret-0123"
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


def udp_counters(pid):
    """The Udp line of the server's network namespace: name -> value."""
    lines = [line.split() for line in Path(f"/proc/{pid}/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:])))


def socket_drops(pid):
    """Datagrams each UDP socket of the namespace dropped at a full receive buffer: inode -> (owner, count)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = {}
    for table in ("udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            out[fields[9]] = ("server" if fields[9] in inodes else "tools", int(fields[-1]))
    return out


class PlateauMeter:
    """Samples the namespace's UDP counters while a load runs: `peak` is the best one-second forwarding
    rate, `drops` the datagrams dropped at full receive buffers by owner (sockets are sampled while
    they exist, since relay and client sockets close at the end of a run)."""

    def __init__(self, pid, interval=0.25, window=4):
        self.pid, self.interval, self.window = pid, interval, window
        self.samples = []
        self.before = socket_drops(pid)
        self.seen = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), udp_counters(self.pid)["OutDatagrams"]))
            for inode, (owner, count) in socket_drops(self.pid).items():
                self.seen[inode] = (owner, max(count, self.seen.get(inode, (owner, 0))[1]))
            self.stop.wait(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def peak(self):
        best = 0.0
        for (t0, n0), (t1, n1) in zip(self.samples, self.samples[self.window:]):
            best = max(best, (n1 - n0) / 2 / (t1 - t0))
        return best

    @property
    def drops(self):
        out = {"server": 0, "tools": 0}
        for inode, (owner, count) in self.seen.items():
            out[owner] += count - self.before.get(inode, (owner, 0))[1]
        return out


class CPUBudget:
    """A CPU cgroup (v1 `cpu` or v2) that caps a process at `cores` cores, in 10 ms periods."""

    PERIOD_US = 10000

    def __init__(self, name, cores):
        quota = max(1000, int(cores * self.PERIOD_US))
        v1 = Path("/sys/fs/cgroup/cpu")
        if (v1 / "cpu.cfs_quota_us").exists():
            self.path = v1 / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        elif Path("/sys/fs/cgroup/cgroup.controllers").exists():
            self.path = Path("/sys/fs/cgroup") / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.max").write_text(f"{quota} {self.PERIOD_US}")
        else:
            sys.exit("--cpu-budget needs a writable CPU cgroup (v1 cpu controller or cgroup v2)")

    def add(self, pid):
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self):
        try:
            self.path.rmdir()
        except OSError:
            pass


def server_pid(process):
    """The server's own pid: `ip netns exec` execs it, so it is the child we started."""
    return process.pid


def start_tandem(ns, workdir):
    binary = REPO / ".build" / "release" / "tandem"
    if not binary.is_file():
        sys.exit(f"no release build at {binary}: swift build -c release --product tandem")
    log = open(workdir / "tandem.log", "w")
    process = ns.popen([
        str(binary), "serve", "--no-tls", "--secret", "bench-join-secret-0123", "--store", "memory", "--listen", "127.0.0.1:0",
        "--data-dir", str(workdir), "--turn-listen", f"127.0.0.1:{TURN_PORT}", "--turn-secret", SECRET,
        "--turn-realm", "bench", "--turn-allow-loopback-peers", "--turn-user-quota", "0", "--turn-allocate-rate", "0", "--turn-unauthenticated-rate", "0",
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
    cpu0 = cpu_seconds(pid)
    with PlateauMeter(pid) as meter:
        result = uclient(ns, clients, messages, size)
    cpu1 = cpu_seconds(pid)
    out = result.stdout + result.stderr
    sent = SENT.findall(out)
    lost = LOST.search(out)
    if not sent or not lost:
        return None
    s, r = map(int, sent[-1])
    forwarded = 2 * r
    return {
        "sent": s, "received": r, "loss_pct": 100.0 * (s - r) / s if s else 100.0,
        "plateau_per_s": meter.peak, "cpu_us_per_packet": 1e6 * (cpu1 - cpu0) / forwarded if forwarded else float("nan"),
        "drops": meter.drops,
    }


def allocations(ns, pid, count, per_client=100):
    """Holds `count` allocations open (-h) from uclient processes of `per_client` allocations each,
    started together (one uclient sets its allocations up one after another, about ten a second, and
    with 200 or more in one process it gets 437 from its first Allocate, against either server).
    Returns allocations per second (still the clients' pace), the server's CPU milliseconds per
    allocation set-up (two Allocates, CreatePermission, ChannelBind) and KB of RSS per allocation;
    NaN when the allocations were not all made."""
    rss0 = rss_kb(pid)
    cpu0 = cpu_seconds(pid)
    t0 = time.monotonic()
    processes = []
    selector = selectors.DefaultSelector()
    for first in range(0, count, per_client):
        n = min(per_client, count - first)
        # stdbuf: uclient's progress lines must arrive when printed, not when its buffer fills.
        args = ["stdbuf", "-oL", "turnutils_uclient", "-W", SECRET, "-u", "bench", "-e", "127.0.0.1", "-r", str(PEER_PORT), "-c",
                "-z", "1000", "-m", str(n), "-n", "2", "-l", "100", "-h", "-p", str(TURN_PORT), "127.0.0.1"]
        process = ns.popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        selector.register(process.stdout, selectors.EVENT_READ, process)
    waiting = set(processes)
    connected = None
    deadline = t0 + 60 + 0.2 * per_client
    # Wait (never past the deadline) for every uclient to report its allocations made.
    while waiting and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
            line = key.fileobj.readline()
            if not line:
                selector.unregister(key.fileobj)
                waiting.discard(key.data)
            elif "Total connect time" in line:
                waiting.discard(key.data)
    if not waiting:
        connected = time.monotonic()
    cpu1 = cpu_seconds(pid)
    time.sleep(1)
    rss1 = rss_kb(pid)
    for process in processes:
        process.send_signal(signal.SIGKILL)
        process.wait()
    if connected is None:
        return float("nan"), float("nan"), float("nan")
    return count / (connected - t0), 1000 * (cpu1 - cpu0) / count, (rss1 - rss0) / count


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="40,60,80,100,120,140")
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--sizes", default="172,1200")
    parser.add_argument("--allocations", type=int, default=1000)
    parser.add_argument("--cpu-budget", type=float, default=0, help="cap each server at this many cores (0: no cap)")
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
        budgets = []
        if args.cpu_budget > 0:
            for name, process in servers.items():
                budget = CPUBudget(f"tandem-bench-{name}", args.cpu_budget)
                budget.add(server_pid(process))
                budgets.append(budget)
        try:
            cap = f", each server capped at {args.cpu_budget:g} cores" if args.cpu_budget > 0 else ""
            print(f"TURN benchmark, {os.cpu_count()} cores{cap}, uclient -c -z 1 -n {args.messages}; "
                  f"forwarded = client->peer + peer->client; offered = 2 000 forwarded pkt/s per client")
            print(f"{'size':>5} {'clients':>7} | {'server':>6} {'plateau pkt/s':>13} {'loss %':>7} {'CPU us/pkt':>10} "
                  f"{'drops: server':>13} {'tools':>6}")
            best = {"tandem": {}, "coturn": {}}
            for size in map(int, args.sizes.split(",")):
                lossy = {"tandem": 0, "coturn": 0}
                for clients in map(int, args.clients.split(",")):
                    for name in ("tandem", "coturn"):
                        if lossy[name] >= 2:
                            continue
                        point = load_point(namespaces[name], server_pid(servers[name]), clients, args.messages, size)
                        if point is None:
                            print(f"{size:>5} {clients:>7} | {name:>6} (no totals: uclient failed)")
                            lossy[name] += 1
                            continue
                        print(f"{size:>5} {clients:>7} | {name:>6} {point['plateau_per_s']:>13.0f} {point['loss_pct']:>7.3f} "
                              f"{point['cpu_us_per_packet']:>10.2f} {point['drops']['server']:>13} {point['drops']['tools']:>6}",
                              flush=True)
                        if point["loss_pct"] == 0:
                            lossy[name] = 0
                            best[name][size] = max(best[name].get(size, 0), point["plateau_per_s"])
                        else:
                            lossy[name] += 1
            print()
            for size in map(int, args.sizes.split(",")):
                t, c = best["tandem"].get(size, 0), best["coturn"].get(size, 0)
                ratio = f"{t / c:.2f}" if c else "n/a"
                print(f"loss-free forwarded pkt/s at {size} B: tandem {t:.0f}, coturn {c:.0f}, ratio {ratio}")
            for name in ("tandem", "coturn"):
                rate, cpu_ms, kb = allocations(namespaces[name], server_pid(servers[name]), args.allocations)
                print(f"{name}: {args.allocations} allocations at {rate:.0f}/s (the clients' pace), {cpu_ms:.3f} ms CPU each "
                      f"({1000 / cpu_ms if cpu_ms > 0 else float('inf'):.0f} per core-second), {kb:.1f} KB RSS per allocation")
        finally:
            for process in list(servers.values()) + peers:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
            for budget in budgets:
                budget.remove()
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
