"""Presenting a replay: an aligned table for people, JSON for tools, JSONL logs for files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from .events import RecordedEvent
from .machine import Replay, Step

__all__ = ["read_log", "render_json", "render_table", "write_log"]

_GREEN, _RED, _YELLOW, _DIM, _RESET = "\033[32m", "\033[31m", "\033[33m", "\033[2m", "\033[0m"


def read_log(path: str | Path) -> list[RecordedEvent]:
    """Read an exported log: one ``RecordedEvent`` JSON object per line."""
    decoder = msgspec.json.Decoder(RecordedEvent)
    lines = Path(path).read_bytes().splitlines()
    return [decoder.decode(line) for line in lines if line.strip()]


def write_log(events: Iterable[RecordedEvent]) -> bytes:
    enc = msgspec.json.Encoder()
    return b"".join(enc.encode(e) + b"\n" for e in events)


def _step_json(step: Step) -> dict[str, Any]:
    e, rec = step.event, step.recorded
    out: dict[str, Any] = {
        "seq": e.seq, "event_id": e.event_id, "name": e.name, "status": rec.status,
        "recorded": {"from_state": rec.from_state, "to_state": rec.to_state, "error": rec.error},
        "actions": msgspec.to_builtins(rec.actions), "matches": step.matches,
        "mismatch": step.mismatch,
    }
    if step.decision is not None:
        out["replayed"] = {"from_state": step.decision.from_state,
                           "to_state": step.computed.to_state if step.computed else None,
                           "decision": step.decision.kind, "reason": step.decision.reason}
        out["guards"] = msgspec.to_builtins(step.decision.guards)
    return out


def render_json(execution_id: str, result: Replay) -> bytes:
    return msgspec.json.encode({
        "execution_id": execution_id, "matches": result.matches,
        "blocked_at": result.blocked_at, "state": result.snapshot.state,
        "status": result.snapshot.status, "data": result.snapshot.data,
        "steps": [_step_json(s) for s in result.steps],
    })


def render_table(execution_id: str, result: Replay, *, color: bool) -> str:
    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if color else text

    rows = [("SEQ", "EVENT", "STATUS", "STATE", "GUARDS", "ACTIONS", "REPLAY")]
    marks: list[str] = []
    for step in result.steps:
        e, rec = step.event, step.recorded
        # The STATE column is what was recorded; where the replay decides otherwise the
        # row is marked DIVERGED and the mismatch line below says what it would do.
        before = rec.from_state or "-"
        after = rec.to_state or before
        state = f"{before} -> {after}" if step.decision is not None else "-"
        guards = ", ".join(f"{g.expression}={'true' if g.passed else 'false'}"
                           for g in (step.decision.guards if step.decision else ()))
        actions = ", ".join(
            f"{a.name}:{'ok' if a.ok else 'failed'}" + (f"x{a.attempts}" if a.attempts > 1 else "")
            for a in rec.actions)
        if step.decision is None:
            verdict: str = "waiting" if rec.status in ("pending", "processing") else rec.status
        else:
            verdict = "match" if step.matches else "DIVERGED"
        rows.append((str(e.seq), e.name, rec.status, state, guards or "-", actions or "-", verdict))
        marks.append("diverged" if not step.matches else
                     "failed" if rec.status in ("failed", "dead") else
                     "changed" if before != after else "")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        text = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        if n == 0:
            text = paint(text, _DIM)
        elif marks[n - 1] == "diverged":
            text = paint(text, _RED)
        elif marks[n - 1] == "failed":
            text = paint(text, _YELLOW)
        elif marks[n - 1] == "changed":
            text = paint(text, _GREEN)
        lines.append(text)
    for step in result.steps:
        if step.mismatch:
            lines.append(paint(f"seq {step.event.seq}: {step.mismatch}", _RED))
        if step.recorded.error and step.decision is not None:
            lines.append(f"seq {step.event.seq}: error: {step.recorded.error}")
    summary = ("replay matches the recorded log" if result.matches
               else "replay DIVERGES from the log")
    lines.append("")
    lines.append(f"{execution_id}: state {result.snapshot.state or '-'}, status"
                 f" {result.snapshot.status}; {summary}"
                 + (f"; blocked at seq {result.blocked_at}" if result.blocked_at else ""))
    return "\n".join(lines)
