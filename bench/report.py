"""The results: percentiles, the printed table and the JSON file, from one figures dict.

Pure functions of the figures (no clock, no I/O but ``write_json``), so a test can
render a table from a hand-made dict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["TARGETS", "latency_summary", "percentile", "render", "rows", "write_json"]

# Issue 5's targets, printed next to the figures as information; nothing asserts them.
TARGETS: dict[str, dict[str, Any]] = {
    "ingest_per_s": {"min": 3000, "text": ">= 3,000/s"},
    "ingest_p99_ms": {"max": 20, "text": "p99 <= 20 ms"},
    "e2e_w2_per_s": {"min": 1500, "text": ">= 1,500/s"},
    "completions_per_s": {"min": 700, "text": ">= 700/s (10x DBOS ~70/s)"},
    "moderate_p50_ms": {"max": 5, "text": "p50 <= 5 ms"},
    "moderate_p99_ms": {"max": 25, "text": "p99 <= 25 ms"},
    "history_ratio": {"max": 1.2, "text": "<= 1.2"},
    "replay_s": {"max": 1.0, "text": "< 1 s"},
    "worker_rss_mib": {"max": 100, "text": "<= 100 MiB"},
}


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of latencies given in seconds, in milliseconds (0.01 ms)."""
    return {"n": len(seconds),
            "p50": round(percentile(seconds, 50) * 1e3, 2),
            "p99": round(percentile(seconds, 99) * 1e3, 2),
            "max": round(max(seconds, default=0.0) * 1e3, 2)}


def _verdict(key: str, value: float | None) -> str:
    target = TARGETS[key]
    if value is None:
        return target["text"]
    met = value >= target["min"] if "min" in target else value <= target["max"]
    return f"{target['text']} ({'met' if met else 'missed'})"


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _num(value: float) -> str:
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def _ms(value: float) -> str:
    return f"{_num(value)} ms"


def _share(value: float, floor: float | None) -> str:
    return f"{value / floor:.0%}" if floor else ""


def _lat(lat: dict[str, float], keys: Sequence[str] = ("p50", "p99", "max")) -> str:
    return " / ".join(_num(lat[k]) for k in keys) + " ms"


Row = tuple[str, str, str, str, str]  # section, measure, value, of floor, target


def rows(figures: dict[str, Any]) -> list[Row]:
    """The table's rows from the figures dict; sections that did not run are left out."""
    out: list[Row] = []
    floors = figures.get("floors", {})
    floor = floors.get("insert_xadd_per_s")
    if core := figures.get("core"):
        out.append(("core", "decide + apply per event",
                    f"{core['decide_apply_us']:.1f} us", "", ""))
        out.append(("core", f"replay of {core['replay_events']:,} events (in process)",
                    _ms(core["replay_ms"]), "", ""))
    if floors:
        out.append(("floor", f"INSERT (autocommit) + XADD, {floors['concurrency']} clients",
                    _rate(floors["insert_xadd_per_s"]), "", ""))
        out.append(("floor", "  latency p50 / p99 / max", _lat(floors["insert_xadd_ms"]), "", ""))
        out.append(("floor", f"XREADGROUP + XACK, COUNT {floors['xread_count']}",
                    _rate(floors["xread_xack_per_s"]), "", ""))
        if rt := floors.get("round_trip_p50_ms"):
            pg, redis = rt["postgres"], rt["redis"]
            out.append(("floor", f"round trip p50, back to back / {floors['round_trip_gap_ms']:g}"
                        " ms apart", f"PostgreSQL {_num(pg['back_to_back'])} /"
                        f" {_num(pg['spaced'])}, Redis {_num(redis['back_to_back'])} /"
                        f" {_num(redis['spaced'])} ms", "", ""))
    if ingest := figures.get("ingest"):
        who = "API alone" if not ingest["workers"] else f"API + {ingest['workers']} workers"
        out.append(("ingest", f"accepted events, {ingest['clients']} clients, {who}",
                    _rate(ingest["accepted_per_s"]), _share(ingest["accepted_per_s"], floor),
                    _verdict("ingest_per_s", ingest["accepted_per_s"])))
        out.append(("ingest", "  202 latency p50 / p99 / max", _lat(ingest["latency_ms"]),
                    "", _verdict("ingest_p99_ms", ingest["latency_ms"]["p99"])))
        if cpu := ingest.get("cpu_s_per_1000_events"):
            out.append(("ingest", "  CPU-s per 1,000 events: API / PostgreSQL / load gen",
                        f"{cpu['api']:.2f} / {cpu['postgres']:.2f} / {cpu['load generator']:.2f}",
                        "", ""))
    for _name, run in sorted(figures.get("e2e", {}).items()):
        w = run["workers"]
        target = _verdict("e2e_w2_per_s", run["processed_per_s"]) if w == 2 else ""
        out.append((f"e2e W={w}", f"processed events ({run['events']:,}: {run['executions']}"
                    f" x {run['events_per_execution']})", _rate(run["processed_per_s"]),
                    _share(run["processed_per_s"], floor), target))
        out.append((f"e2e W={w}", "  accept->processed p50 / p99 / max",
                    _lat(run["latency_ms"]), "", ""))
        out.append((f"e2e W={w}", "  posted (202) while processing", _rate(run["posted_per_s"]),
                    "", ""))
        cpu = sum(run["cpu_s_per_1000_events"].values())
        out.append((f"e2e W={w}", "  events per worker pass; CPU-s per 1,000 events (all)",
                    f"{run['events_per_pass']:.2f}; {cpu:.2f} s", "", ""))
    if mod := figures.get("moderate"):
        lat = mod["latency_ms"]
        out.append(("moderate", f"fixed rate {mod['rate_per_s']:,.0f}/s for {mod['seconds']:g} s,"
                    f" W={mod['workers']}", f"p50 {_ms(lat['p50'])}", "",
                    _verdict("moderate_p50_ms", lat["p50"])))
        out.append(("moderate", "  accept->processed p99 / max", _lat(lat, ("p99", "max")), "",
                    _verdict("moderate_p99_ms", lat["p99"])))
        out.append(("moderate", "  202 latency p50 / p99", _lat(mod["accept_ms"], ("p50", "p99")),
                    "", ""))
    if light := figures.get("light"):
        out.append(("light", f"fixed rate {light['rate_per_s']:,.0f}/s for {light['seconds']:g} s,"
                    f" W={light['workers']}: accept->processed p50 / p99",
                    _lat(light["latency_ms"], ("p50", "p99")), "",
                    f"{light['share_of_max']:.0%} of max, for comparison"))
    if comp := figures.get("completions"):
        out.append(("completions", f"2-event, 2-action executions ({comp['executions']:,}),"
                    f" W={comp['workers']}", _rate(comp["completed_per_s"]),
                    _share(2 * comp["completed_per_s"], floor),
                    _verdict("completions_per_s", comp["completed_per_s"])))
        out.append(("completions", "  start->completed p50 / p99 / max",
                    _lat(comp["latency_ms"]), "", ""))
        if cpu := comp.get("cpu_s_per_1000"):
            out.append(("completions", "  worker passes per execution; CPU-ms per execution",
                        f"{comp['passes_per_execution']:.2f}; {sum(cpu.values()):.2f}", "", ""))
            out.append(("completions", "  CPU-ms per execution: API / workers / PostgreSQL",
                        f"{cpu['api']:.2f} / {cpu['workers']:.2f} / {cpu['postgres']:.2f}",
                        "", ""))
    if hist := figures.get("history"):
        n, short = hist["long_events"], hist["short_events"]
        out.append(("history", f"batch of {hist['batch']}: per event at {short:,} events",
                    _ms(hist["short_ms_per_event"]), "", ""))
        out.append(("history", f"batch of {hist['batch']}: per event at {n:,} events",
                    _ms(hist["long_ms_per_event"]), "", ""))
        out.append(("history", "  ratio (long / short)", f"{hist['ratio']:.2f}", "",
                    _verdict("history_ratio", hist["ratio"])))
        out.append(("history", f"one at a time: accept->processed at {short:,} / {n:,}",
                    f"{_num(hist['single_short_ms'])} / {_num(hist['single_long_ms'])} ms", "",
                    f"ratio {hist['single_ratio']:.2f}"))
        out.append(("history", f"flowrt replay of {hist['replay_events']:,} events (CLI wall)",
                    f"{hist['replay_s']:.2f} s", "", _verdict("replay_s", hist["replay_s"])))
    if res := figures.get("resources"):
        for name, mib in res["rss_mib"].items():
            target = _verdict("worker_rss_mib", mib) if name.startswith("worker") else ""
            out.append(("resources", f"peak RSS {name}", f"{mib:.0f} MiB", "", target))
        for name, cpu in res["cpu_s_per_1000_events"].items():
            out.append(("resources", f"CPU per 1,000 events: {name}", f"{cpu:.2f} s", "", ""))
        out.append(("resources", f"CPU busy over the W={res['workers']} run",
                    f"{res['busy_cores']:.2f} of {res['cores']} cores", "", ""))
    return out


def render(figures: dict[str, Any], header: Sequence[str] = ()) -> str:
    """The table as text: a header, aligned columns, and a legend."""
    table = rows(figures)
    titles: Row = ("section", "measure", "value", "of floor", "target")
    widths = [max(len(r[i]) for r in [titles, *table]) for i in range(5)]
    lines = list(header)

    def line(r: Row) -> str:
        return "  ".join(c.ljust(w) if i != 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    lines.append(line(titles))
    lines.append("  ".join("-" * w for w in widths))
    previous = None
    for r in table:
        lines.append(line(r if r[0] != previous else ("", *r[1:])))
        previous = r[0]
    lines.append("")
    lines.append("of floor: events/s as a share of the INSERT + XADD floor (one durable commit"
                 " and one XADD per event, same concurrency, same servers); a completion"
                 " counts 2 events. Targets are information, never asserted.")
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
