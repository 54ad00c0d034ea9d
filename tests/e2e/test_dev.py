"""`flowrt dev` (what `make run` runs): private servers, the stack, a clean Ctrl-C,
and the same data on the next start."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from flowrt.devservers import PrivatePostgres, port_is_free
from tests.support.keys import bearer
from tests.support.procs import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
FLOWRT = str(Path(sys.executable).parent / "flowrt")


def _ports(n: int) -> int:
    """A base port with n free consecutive ports after it."""
    for base in range(23000, 60000, 37):
        if all(port_is_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free port range")


def _env(metrics_base: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWRT_")}
    env["PYTHONPATH"] = str(ROOT)  # the demo app, while the test runs from its tmp dir
    env["FLOWRT_METRICS_PORT"] = str(metrics_base)
    env["FLOWRT_SHUTDOWN_GRACE"] = "5"
    return env


def _start(data: Path, port: int, metrics: int, *extra: str) -> subprocess.Popen[str]:
    # run from the data dir's parent with a relative --data-dir, as `make run` does
    return subprocess.Popen([FLOWRT, "dev", "--data-dir", data.name, "--port", str(port), *extra],
                            cwd=data.parent, env=_env(metrics), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_banner(proc: subprocess.Popen[str], timeout: float = 120) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("flowrt dev exited:\n" + "".join(lines))
        lines.append(line)
        if "flowrt replay o-1" in line:
            return lines
    raise AssertionError("no banner:\n" + "".join(lines))


def _key(banner: str) -> dict[str, str]:
    """Headers with the key the banner printed (a fresh admin key of tenant ``dev``)."""
    m = re.search(r"^\s*export FLOWRT_KEY=(frk_\S+)$", banner, re.MULTILINE)
    assert m, banner
    assert 'Authorization: Bearer $FLOWRT_KEY' in banner  # the curl lines use it
    return bearer(m.group(1))


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    return out


def _wait_state(api: str, want: str, auth: dict[str, str]) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = httpx.get(f"{api}/v1/executions/o-1", headers=auth).json()
        if body.get("state") == want:
            return body
        time.sleep(0.2)
    raise AssertionError(f"not {want}: {body}")


@pytest.fixture
def data_dir():
    # A directory that an unprivileged user can reach (pytest's tmp_path is private to
    # its owner), so the cluster lives inside it, as in a checkout under /home or /work.
    base = Path(tempfile.mkdtemp(prefix="flowrt-devtest-"))
    base.chmod(0o755)
    data = base / "dev"
    yield data
    shutil.rmtree(PrivatePostgres(data).data_dir.parent, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)


def test_dev_runs_the_stack_and_keeps_data_between_runs(data_dir: Path):
    base = _ports(3)
    api = f"http://127.0.0.1:{base}"
    proc = _start(data_dir, base, base + 1)
    try:
        banner = "".join(_wait_banner(proc))
        assert (data_dir / "postgres" / "PG_VERSION").exists()  # inside the data dir
        assert f"API {api}" in banner and f"127.0.0.1:{base + 2}/metrics" in banner
        assert "(private)" in banner and "curl" in banner
        auth = _key(banner)
        r = httpx.post(f"{api}/v1/executions", json={"workflow": "order", "input": {"sku": "A"},
                                                     "execution_id": "o-1"}, headers=auth)
        assert r.status_code == 202, r.text
        r = httpx.post(f"{api}/v1/executions/o-1/events",
                       json={"name": "approve", "payload": {"amount": 50}}, headers=auth)
        assert r.status_code == 202, r.text
        _wait_state(api, "approved", auth)
        assert httpx.get(f"http://127.0.0.1:{base + 1}/metrics").status_code == 200
    finally:
        out = _stop(proc)
    assert "stopped" in out
    for port in (base, base + 1, base + 2):
        assert port_is_free(port), f"port {port} still in use after Ctrl-C"

    proc = _start(data_dir, base, base + 1)
    try:
        _wait_banner(proc)
        body = _wait_state(api, "approved", auth)  # the same data (and key) came back
        assert body["data"] == {"sku": "A", "reserved": True, "notified": True}
    finally:
        _stop(proc)

    proc = _start(data_dir, base, base + 1, "--reset")
    try:
        auth = _key("".join(_wait_banner(proc)))  # the old key went with the data
        assert httpx.get(f"{api}/v1/executions/o-1", headers=auth).status_code == 404
    finally:
        _stop(proc)


def test_dev_port_taken_is_one_clear_line(data_dir: Path):
    base = _ports(3)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
        s.bind(("127.0.0.1", base))
        s.listen()
        out = subprocess.run([FLOWRT, "dev", "--data-dir", str(data_dir), "--port", str(base)],
                             cwd=ROOT, env=_env(base + 1), capture_output=True, text=True,
                             timeout=60)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"port {base}" in lines[0] and "--port" in lines[0], out.stderr
