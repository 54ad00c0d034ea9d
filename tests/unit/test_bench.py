"""The benchmark's pure helpers (``bench/``): percentiles, the table, /proc parsing and
the load generator's HTTP client. No figure is measured or asserted here."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest

from bench import load, profile
from bench.procinfo import parse_stat
from bench.report import TARGETS, latency_summary, percentile, render, rows

LAT = {"n": 10, "p50": 2.5, "p99": 12.0, "max": 30.0}

FIGURES: dict[str, Any] = {
    "core": {"events": 20000, "decide_apply_us": 4.1, "replay_events": 20000,
             "replay_ms": 88.0},
    "floors": {"concurrency": 32, "seconds": 5.0, "insert_xadd_per_s": 10000.0,
               "insert_xadd_ms": LAT, "xread_count": 100, "xread_messages": 50000,
               "xread_xack_per_s": 36000.0, "round_trip_gap_ms": 10.0,
               "round_trip_p50_ms": {"postgres": {"back_to_back": 0.12, "spaced": 0.45},
                                     "redis": {"back_to_back": 0.14, "spaced": 0.65}}},
    "ingest": {"clients": 32, "workers": 0, "accepted_per_s": 2500.0, "latency_ms": LAT},
    "e2e": {w: {"workers": int(w[1]), "executions": 100, "events_per_execution": 150,
                "events": 15000, "processed_per_s": 1600.0, "latency_ms": LAT,
                "posted_per_s": 1600.0, "events_per_pass": 1.5,
                "cpu_s_per_1000_events": {"api": 0.5, "workers": 1.0}} for w in ("w1", "w2")},
    "moderate": {"workers": 2, "rate_per_s": 480, "seconds": 20.0, "latency_ms": LAT,
                 "accept_ms": LAT},
    "light": {"workers": 2, "rate_per_s": 160, "seconds": 10.0, "share_of_max": 0.1,
              "latency_ms": LAT, "accept_ms": LAT},
    "completions": {"workers": 2, "executions": 3000, "completed_per_s": 650.0,
                    "latency_ms": LAT, "passes_per_execution": 1.5, "busy_cores": 1.8,
                    "cpu_s_per_1000": {"api": 0.6, "workers": 0.9, "postgres": 1.0,
                                       "redis": 0.1, "load generator": 0.05}},
    "history": {"short_events": 100, "long_events": 20000, "batch": 200,
                "short_ms_per_event": 1.0, "long_ms_per_event": 1.1, "ratio": 1.1,
                "single_short_ms": 2.0, "single_long_ms": 2.2, "single_ratio": 1.1,
                "replay_events": 20000, "replay_s": 0.6},
    "resources": {"workers": 2, "cores": 2, "busy_cores": 1.7,
                  "rss_mib": {"api": 60.0, "worker1": 59.0, "worker2": 120.0},
                  "cpu_s_per_1000_events": {"api": 0.55, "workers": 1.1, "postgres": 1.2}},
}


def test_percentile_is_nearest_rank() -> None:
    values = [float(x) for x in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([], 99) == 0.0


def test_latency_summary_is_in_milliseconds() -> None:
    summary = latency_summary([0.001, 0.002, 0.010])
    assert summary == {"n": 3, "p50": 2.0, "p99": 10.0, "max": 10.0}


def test_render_shows_every_section_with_floor_shares_and_targets() -> None:
    text = render(FIGURES, header=["flowrt bench, test"])
    assert text.startswith("flowrt bench, test")
    for section in ("core", "floor", "ingest", "e2e W=1", "e2e W=2", "moderate", "light",
                    "completions", "history", "resources"):
        assert f"\n{section} " in text, section
    assert "25%" in text  # ingest: 2,500/s of a 10,000/s floor
    assert "13%" in text  # completions: 2 x 650/s of 10,000/s
    assert ">= 3,000/s (missed)" in text
    assert ">= 1,500/s (met)" in text
    assert "<= 100 MiB (missed)" in text  # worker2's 120 MiB
    assert "fixed rate 160/s for 10 s, W=2" in text and "10% of max" in text
    assert "1.50; 2.65" in text  # completions: passes and CPU-ms per execution
    assert "0.60 / 0.90 / 1.00" in text
    assert "10 ms apart" in text and "PostgreSQL 0.12 / 0.45, Redis 0.14 / 0.65 ms" in text
    assert all(len(r) == 5 for r in rows(FIGURES))


def test_render_leaves_out_sections_that_did_not_run() -> None:
    text = render({"core": FIGURES["core"]})
    assert "core" in text and "ingest" not in text and "of floor" in text


def test_every_target_says_which_way() -> None:
    assert all(("min" in t) != ("max" in t) and t["text"] for t in TARGETS.values())


def test_quick_profile_is_smaller() -> None:
    full, quick = profile.FULL, profile.QUICK
    assert quick.ingest_seconds < full.ingest_seconds
    assert quick.e2e_executions * quick.e2e_events < full.e2e_executions * full.e2e_events
    assert quick.with_clients(8).clients == 8 and quick.with_clients(None) is quick


def test_parse_stat_sums_own_and_waited_for_children() -> None:
    # pid (comm) state ppid ... utime stime cutime cstime at fields 14-17
    line = "42 (post gres) S 7 " + " ".join(["0"] * 9) + " 100 50 30 20 0 0"
    ppid, seconds = parse_stat(line)
    assert ppid == 7
    assert seconds == pytest.approx(200 / os.sysconf("SC_CLK_TCK"))


async def test_load_generator_counts_answers_and_statuses() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            path = line.split()[1]
            length = 0
            while (header := await reader.readline()) != b"\r\n":
                if header.lower().startswith(b"content-length:"):
                    length = int(header.split(b":")[1])
            await reader.readexactly(length)
            status = b"404 Not Found" if path.endswith(b"/missing") else b"202 Accepted"
            body = b'{"ok":true}'
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        result = await load.generate({
            "port": port, "concurrency": 3, "mode": "closed",
            "sequences": [[["/v1/a", "{}"], ["/v1/b", "{}"]]] * 5 + [[["/v1/missing", "{}"]]]})
    assert result["answers"] == 11 and result["ok"] == 10
    assert result["errors"] == {"404": 1}
    assert result["latency_ms"]["n"] == 11
    json.dumps(result)  # what the runner reads back
