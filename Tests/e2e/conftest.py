"""Fixtures for the end-to-end tests: a real `tandem serve --dev` process, and loopback-only ICE.

The server binary is TANDEM_BIN, by default .build/debug/tandem in the repository root.
"""

import json
import os
import re
import signal
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aioice.ice
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / ".build" / "debug" / "tandem"
STARTUP_TIMEOUT_S = 30.0

SERVING = re.compile(r"serving https://(?P<host>[^\s:]+):(?P<port>\d+)")
API_KEY = re.compile(r"admin API key for this run: (?P<key>\S+)")
TURN_LISTEN = re.compile(r"turn listening on udp\+tcp 127\.0\.0\.1:(?P<port>\d+)")
TURNS_LISTEN = re.compile(r"turn listening on tls 127\.0\.0\.1:(?P<port>\d+)")
TURN_SECRET = "e2e-turn-secret-0123"
TURN_ARGS = [
    "--turn-listen", "127.0.0.1:0", "--turns-listen", "127.0.0.1:0", "--turn-secret", TURN_SECRET,
    "--turn-allow-loopback-peers", "--turn-deny-peers", "127.0.0.3", "--turn-user-quota", "0",
    "--turn-allocate-rate", "0",
]


@dataclass
class TandemServer:
    process: subprocess.Popen
    data_dir: Path
    stderr_path: Path
    host: str
    port: int
    api_key: str
    turn_port: int | None = None
    turns_port: int | None = None

    @property
    def ca_path(self) -> Path:
        return self.data_dir / "certs" / "ca.pem"

    @property
    def signal_url(self) -> str:
        return f"wss://{self.host}:{self.port}/v1/signal"

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts only the development CA the server made in its data directory."""
        # The default context checks the host name and requires the certificate.
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_path))

    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        """One admin API call with the run's key; the decoded JSON answer."""
        request = urllib.request.Request(
            self.base_url + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=self.ssl_context(), timeout=10) as response:
            return json.loads(response.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.base_url}/metrics", context=self.ssl_context(), timeout=10) as response:
            return response.read().decode()

    def metric(self, name: str) -> float:
        """One sample of /metrics by its full name (labels included), 0 when absent."""
        match = re.search(rf"^{re.escape(name)} (\S+)$", self.metrics(), re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def wait_metric(self, name: str, at_least: float) -> float:
        """The metric once it reaches `at_least` (TURN shards publish once a second); fails after 5 s."""
        value = self.metric(name)
        for _ in range(50):
            if value >= at_least:
                return value
            time.sleep(0.1)
            value = self.metric(name)
        raise AssertionError(f"{name} stayed at {value}, below {at_least}")

    def wait_metric_at_most(self, name: str, at_most: float) -> float:
        """The metric once it falls to `at_most`; fails after 5 s."""
        value = self.metric(name)
        for _ in range(50):
            if value <= at_most:
                return value
            time.sleep(0.1)
            value = self.metric(name)
        raise AssertionError(f"{name} stayed at {value}, above {at_most}")

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError as error:
            return f"(could not read {self.stderr_path}: {error})"


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def tandem_server(request, tmp_path):
    yield from _launch(request, tmp_path, turn=False)


@pytest.fixture
def tandem_turn_server(request, tmp_path):
    """A server that also runs its TURN service on loopback (UDP, TCP and TLS on ports of its choosing)."""
    yield from _launch(request, tmp_path, turn=True)


def _launch(request, tmp_path, turn: bool, wrapper=(), listen="127.0.0.1:0", extra=(), admin_host=None,
            dev_sh: bool = False):
    """Starts `tandem serve --dev` and yields it. `wrapper` runs it inside something (`ip netns exec NS`);
    `admin_host` is where the test reaches its admin API when that is not the address it listens on.
    `dev_sh` starts it as a developer does, through `deploy/dev.sh run` with only a data directory of the
    test's (its ports are fixed: run it in a namespace of the test's own); `turn` is then implied."""
    binary = Path(os.environ.get("TANDEM_BIN", str(DEFAULT_BIN)))
    if not binary.is_file():
        pytest.fail(f"tandem binary not found at {binary} (build it, or set TANDEM_BIN)")

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    stderr_path = tmp_path / "tandem.stderr"
    # Settings come only from the flags below, not from the caller's TANDEM_* variables.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    if dev_sh:
        env["TANDEM_BIN"] = str(binary)  # instead of the script's release build
        command = list(wrapper) + [str(REPO_ROOT / "deploy" / "dev.sh"), "run", "--data-dir", str(data_dir)] + list(extra)
    else:
        command = list(wrapper) + [
            str(binary), "serve", "--dev",
            "--listen", listen,
            "--data-dir", str(data_dir),
            "--store", "memory",
            "--node", "e2e",
        ] + (TURN_ARGS if turn else []) + list(extra)
    wants_turn, wants_turns = turn or dev_sh, turn and not dev_sh
    with open(stderr_path, "wb") as stderr_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr_file,
            cwd=tmp_path, env=env)

    server = None
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            text = stderr_path.read_text(errors="replace")
            serving = SERVING.search(text)
            key = API_KEY.search(text)
            turn_line = TURN_LISTEN.search(text)
            turns_line = TURNS_LISTEN.search(text)
            if serving and key and (turn_line or not wants_turn) and (turns_line or not wants_turns):
                break
            if process.poll() is not None:
                raise RuntimeError(f"tandem serve exited with {process.returncode} before serving")
            if time.monotonic() > deadline:
                raise RuntimeError(f"tandem serve did not report its port within {STARTUP_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        server = TandemServer(
            process=process, data_dir=data_dir, stderr_path=stderr_path,
            host=admin_host or serving["host"], port=int(serving["port"]), api_key=key["key"],
            turn_port=int(turn_line["port"]) if wants_turn else None,
            turns_port=int(turns_line["port"]) if wants_turns else None)
        assert admin_host or server.host == "127.0.0.1", f"dev server must listen on loopback, not {server.host}"
        assert server.port != 0
        assert server.ca_path.is_file(), f"no development CA at {server.ca_path}"
    except Exception as error:
        _stop(process)
        pytest.fail(f"{error}\n--- tandem serve stderr ---\n{stderr_path.read_text(errors='replace')}")
    except BaseException:
        _stop(process)
        raise

    if not hasattr(request.node, "_tandem_servers"):
        request.node._tandem_servers = []
    request.node._tandem_servers.append(server)
    try:
        yield server
    finally:
        _stop(process)


@pytest.fixture
def postgres(request):
    """A PostgreSQL server of the test's own (see postgres.py), stopped by its PID afterwards."""
    from postgres import start
    server = start()
    request.node._postgres = server
    try:
        yield server
    finally:
        server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        servers = getattr(item, "_tandem_servers", [])
        for index, server in enumerate(servers):
            title = "tandem serve stderr" + (f" ({index + 1} of {len(servers)})" if len(servers) > 1 else "")
            report.sections.append((title, server.stderr_text()))
        postgres = getattr(item, "_postgres", None)
        if postgres is not None:
            report.sections.append(("postgres log", postgres.log()))
    return report


@pytest.fixture
def loopback_ice(monkeypatch):
    """Keeps aiortc's ICE agent on 127.0.0.1.

    aioice's gathering skips 127.0.0.1 and offers every other interface address; it looks
    `get_host_addresses` up in `aioice.ice` at gathering time, so replacing it there is enough.
    Peers must also pass an explicit (empty) ICE server list, or aiortc falls back to a public STUN
    server.
    """
    calls = []

    def loopback_addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
        calls.append((use_ipv4, use_ipv6))
        return ["127.0.0.1"]

    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback_addresses)
    return calls
