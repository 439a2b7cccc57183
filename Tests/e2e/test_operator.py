"""What an operator does to a running `tandem serve`: renew its certificate and send SIGHUP."""

import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import DEFAULT_BIN, _launch


@pytest.fixture
def dev_server(request, tmp_path):
    yield from _launch(request, tmp_path, turn=False)


def healthz(server, ca) -> bool:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{server.port}/healthz", context=context, timeout=5) as answer:
            return answer.status == 200
    except (urllib.error.URLError, ssl.SSLError, ConnectionError):
        return False


def test_sighup_serves_a_renewed_certificate(dev_server, tmp_path):
    server = dev_server
    binary = os.environ.get("TANDEM_BIN", str(DEFAULT_BIN))
    renewed = tmp_path / "renewed"
    subprocess.run([binary, "certs", "dev", "--out", str(renewed)], check=True, capture_output=True, timeout=30)
    live = server.data_dir / "certs"
    assert healthz(server, live / "ca.pem") and not healthz(server, renewed / "ca.pem")

    for name in ("server.pem", "server-key.pem"):
        shutil.copyfile(renewed / name, live / name)
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "read the TLS certificate" not in server.stderr_text():
        assert time.monotonic() < deadline, "no word of the reload"
        time.sleep(0.1)
    assert healthz(server, renewed / "ca.pem"), "the renewed certificate is not served"
    assert not healthz(server, live / "ca.pem")
    assert server.process.poll() is None
