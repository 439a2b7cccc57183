"""Entering network namespaces from a test: setns(2) moves only the calling thread."""

import ctypes
import functools
import os
import subprocess
import threading

import pytest

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int) -> None:
    """Moves the calling thread into the network namespace open at `fd`."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns failed: {os.strerror(code)}")


def enter(name: str) -> None:
    """Moves the calling thread into the namespace `ip netns` knows as `name`."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        setns(fd)
    finally:
        os.close(fd)


def run_in_netns(name: str, fn, *args):
    """Runs fn(*args) in a short-lived thread that has entered network namespace `name`; its result.

    setns moves only the calling thread, so the caller's thread never changes namespace.
    """
    outcome = {}

    def body() -> None:
        try:
            enter(name)
            outcome["value"] = fn(*args)
        except BaseException as error:  # handed back to the caller
            outcome["error"] = error

    thread = threading.Thread(target=body, name=f"in-{name}", daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():
        raise AssertionError(f"{fn.__name__} in {name} did not finish within 30 s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@functools.cache
def _namespace_problem() -> str | None:
    """Why this process cannot make network namespaces, or None when it can (tried once, for real)."""
    if os.geteuid() != 0:
        return "not root"
    name = f"tandem-probe-{os.getpid()}"
    try:
        made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        return "no `ip` command (Debian's iproute2)"
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()} (a container needs CAP_SYS_ADMIN)"
    subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)
    return None


def require_namespaces() -> None:
    """Fails the calling test, with the reason, where network namespaces cannot be made: the tests that
    need them are part of the suite's promise, so they never pass by being skipped."""
    problem = _namespace_problem()
    if problem:
        pytest.fail(f"this test makes network namespaces, which needs root with CAP_SYS_ADMIN and iproute2: {problem}")
