"""Real processes for end-to-end tests: the API and workers as subprocesses."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from flowrt.settings import Settings, child_environ

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def settings_env(s: Settings, **extra: str) -> dict[str, str]:
    """The environment a process needs to run with settings ``s`` (JSON logs)."""
    return child_environ(s, **{"FLOWRT_LOG_FORMAT": "json", **extra})


class Proc:
    """One subprocess with its output in a file; stopped by pid, never left behind."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._log,
                                      stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self, timeout: float = 20) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)
        self._log.close()

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


def start_api(env: dict[str, str], logdir: Path) -> Proc:
    return Proc("api", [str(BIN / "flowrt"), "api"], env, logdir)


def start_worker(name: str, app: str, env: dict[str, str], logdir: Path,
                 metrics_port: int) -> Proc:
    env = {**env, "FLOWRT_METRICS_PORT": str(metrics_port)}
    return Proc(name, [str(BIN / "flowrt-worker"), "--app", app], env, logdir)


def wait_http(url: str, proc: Proc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.output()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s:\n{proc.output()[-3000:]}")
