#!/usr/bin/env python3
"""Fuzzing at depth: every network parser's libFuzzer target for a number of executions, with figures.

Builds the fuzzers once (Tests/Fuzz/run.sh: one without C libraries, one for DTLS), then runs each target on its
corpus in Tests/Fuzz/corpus/TARGET for --runs executions (10 million by default) and prints, per target:
executions, executions per second, coverage (libFuzzer's `cov` and `ft`), the corpus before and after,
and whether it found a crash (its input is left as crash-* in the repository root). New corpus entries
stay; `Tests/Fuzz/run.sh --merge TARGET` minimises a grown corpus before it is committed.

    bench/fuzz/run.py [--runs 10000000] [--targets sdp,rtcp,...] [--max-seconds 3600] [--parallel 1]

--max-seconds stops a slow target early (the figures say how far it got); --parallel runs that many
targets at once, one process each (libFuzzer runs on one thread).
"""

import argparse
import concurrent.futures
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Slowest first, so that --parallel ends them together.
TARGETS = ["turn", "sdp", "dtls", "signal", "rtp", "rtcp", "json"]
DONE = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)")
STAT = re.compile(r"stat::(\w+):\s+(\d+)")
# No allocation stacks: recording one per malloc is most of a Swift target's time under AddressSanitizer,
# and a crash's input is kept to reproduce it with them (Tests/Fuzz/run.sh, or .build-fuzz/tandem-fuzz FILE).
ASAN_OPTIONS = os.environ.get("ASAN_OPTIONS", "malloc_context_size=0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000_000)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--max-seconds", type=int, default=3600)
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()
    targets = args.targets.split(",")
    for target in targets:
        if target not in TARGETS:
            sys.exit(f"unknown target {target}; one of {','.join(TARGETS)}")

    # Builds the fuzzers (and runs a target of each for a second, which changes nothing that matters):
    # tandem-fuzz for the pure targets, tandem-fuzz-dtls, which links the C libraries, for DTLS.
    builds = sorted({"dtls" if t == "dtls" else "json" for t in targets})
    for build in builds:
        subprocess.run([str(ROOT / "Tests/Fuzz/run.sh"), build, "1"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = ROOT / (".build-fuzz" if os.environ.get("TANDEM_FUZZ_ASAN", "1") != "0" else ".build-fuzz-noasan")

    def fuzzer_for(target: str) -> Path:
        return out / ("tandem-fuzz-dtls" if target == "dtls" else "tandem-fuzz")

    print(f"{'target':8} {'executions':>12} {'exec/s':>8} {'cov':>6} {'ft':>7} {'corpus':>15} {'time s':>7}  result", flush=True)

    def fuzz(target: str) -> bool:
        corpus = ROOT / "Tests/Fuzz/corpus" / target
        corpus.mkdir(parents=True, exist_ok=True)
        before = len(os.listdir(corpus))
        started = time.monotonic()
        run = subprocess.run(
            [str(fuzzer_for(target)), str(corpus), f"-runs={args.runs}", f"-max_total_time={args.max_seconds}", "-max_len=8192",
             "-timeout=10", "-print_final_stats=1"],
            cwd=ROOT, env={**os.environ, "TANDEM_FUZZ_TARGET": target, "ASAN_OPTIONS": ASAN_OPTIONS}, capture_output=True, text=True)
        elapsed = time.monotonic() - started
        log = run.stderr
        stats = {name: int(value) for name, value in STAT.findall(log)}
        done = DONE.findall(log)
        cov, ft = (done[-1][1], done[-1][2]) if done else ("?", "?")
        executions = stats.get("number_of_executed_units", 0)
        after = len(os.listdir(corpus))
        result = "ok" if run.returncode == 0 else f"CRASH (exit {run.returncode}; see crash-* and the log below)"
        print(f"{target:8} {executions:>12} {stats.get('average_exec_per_sec', 0):>8} {cov:>6} {ft:>7} "
              f"{before:>6} -> {after:<6} {elapsed:>7.0f}  {result}", flush=True)
        if run.returncode != 0:
            print(log[-4000:], flush=True)
        return run.returncode == 0

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        failed = not all(pool.map(fuzz, targets))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
