"""What /proc says about the machine and about the processes under test (Linux)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["cpu_seconds", "machine", "parse_stat", "peak_rss_mib", "tree_cpu_seconds"]

_TICK = os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory and load: the line every result carries."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu_model": model, "memory_mib": memory,
            "kernel": platform.release(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def parse_stat(text: str) -> tuple[int, float]:
    """``(ppid, cpu seconds)`` from a /proc/PID/stat line: utime + stime + cutime +
    cstime, so children that exited and were waited for count too."""
    fields = text.rsplit(")", 1)[1].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) / _TICK


def cpu_seconds(pid: int) -> float:
    """CPU seconds used by ``pid`` and its children that it waited for."""
    return parse_stat(Path(f"/proc/{pid}/stat").read_text())[1]


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and of its children, live or exited (PostgreSQL's
    postmaster and its backends: a backend that exited is in the postmaster's cutime)."""
    total = cpu_seconds(pid)
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid, seconds = parse_stat(entry.read_text())
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            total += seconds
    return total


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
