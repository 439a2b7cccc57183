"""A PostgreSQL server of a test's own: Debian's binaries (`postgresql`), a new cluster in a directory of
its own, on 127.0.0.1 at a free port, with its settings on its command line. Run as the `postgres` user
when the tests run as root (the server refuses root); stopped by its PID."""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def _binaries() -> Path:
    root = Path("/usr/lib/postgresql")
    versions = sorted((int(p.name) for p in root.iterdir() if p.name.isdigit()), reverse=True) if root.is_dir() else []
    if not versions:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql); deploy/dev.sh test installs it")
    return root / str(versions[0]) / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Postgres:
    process: subprocess.Popen
    port: int
    directory: Path
    command: list[str]

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgres://tandem@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(could not read {self.log_path}: {error})"

    def shut_down(self) -> None:
        """Fast shutdown (SIGINT), then SIGKILL after 10 s; the data stays."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def start_again(self) -> None:
        """The server, shut down, starts again on its data and port."""
        self.process = _run(self.command, self.log_path)
        _wait_listening(self)

    def stop(self) -> None:
        self.shut_down()
        shutil.rmtree(self.directory, ignore_errors=True)


def _run(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def _wait_listening(server: "Postgres") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited with {server.process.returncode}:\n{server.log()}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"postgres did not listen within 30 s:\n{server.log()}")


def start() -> Postgres:
    binaries = _binaries()
    # Not under pytest's tmp_path: its parents are closed to the postgres user.
    directory = Path(tempfile.mkdtemp(prefix="tandem-e2e-pg-"))
    data = directory / "data"
    data.mkdir()
    log = directory / "server.log"
    log.touch()
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for path in (directory, data, log):
            os.chown(path, user.pw_uid, user.pw_gid)
        # setpriv execs the command itself, so that the PID is the server's.
        prefix = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
    with open(log, "ab") as out:
        subprocess.run(prefix + [str(binaries / "initdb"), "-D", str(data), "-U", "tandem", "--auth=trust", "-E", "UTF8",
                                 "--no-sync", "--no-instructions"], stdout=out, stderr=out, check=True)
    port = _free_port()
    command = prefix + [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(directory),
                        "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "fsync=off",
                        "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "logging_collector=off"]
    server = Postgres(process=_run(command, log), port=port, directory=directory, command=command)
    _wait_listening(server)
    return server
