"""Presenting a health report: aligned text for people, JSON for tools."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from .health import Report

__all__ = ["render_json", "render_text"]

_ERROR_WIDTH = 100


def render_json(report: Report) -> bytes:
    """The report with ``healthy`` and ``problems`` first; ages in seconds."""
    return msgspec.json.encode({"healthy": report.healthy, "problems": report.problems,
                                **msgspec.to_builtins(report)})


def _secs(value: float) -> str:
    """A threshold: 60 -> "60s", 0.5 -> "0.5s"."""
    return f"{value:g}s"


def _age(seconds: float) -> str:
    """An age, short: 4.2s, 42s, 3m07s, 2h05m, 3d04h."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def _table(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [(indent + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))).rstrip()
            for row in rows]


def _one_line(text: str | None) -> str:
    flat = " ".join((text or "-").split())
    return flat if len(flat) <= _ERROR_WIDTH else flat[:_ERROR_WIDTH - 3] + "..."


def _examples(title: str, count: int, header: tuple[str, ...],
              rows: list[tuple[str, ...]]) -> list[str]:
    if not count:
        return []
    lines = ["", f"{title}: {count}", *_table([header, *rows], indent="  ")]
    if count > len(rows):
        lines.append(f"  ... and {count - len(rows)} more")
    return lines


def render_text(report: Report) -> str:
    t, pg, rd = report.thresholds, report.postgres, report.redis

    def status(count: int) -> str:
        return "STUCK" if count else "ok"

    checks = [("CHECK", "COUNT", "STATUS", "RULE"),
              ("stuck executions", str(pg.stuck_executions.count),
               status(pg.stuck_executions.count),
               f"not blocked, next event waiting over {_secs(t.behind)}"),
              ("dead events", str(pg.dead_events.count), status(pg.dead_events.count),
               "marked dead; the execution's later events wait behind it"),
              ("unpublished events", str(pg.unpublished_events.count),
               status(pg.unpublished_events.count),
               f"hint not in Redis over {_secs(t.unpublished)} after the append")]
    redis_rules = [("stale pending hints", f"delivered, unacknowledged, idle over {_secs(t.idle)}"),
                   ("idle consumers", f"holding pending hints, idle over {_secs(t.idle)}")]
    if rd is None:
        checks += [(name, "-", "UNREACHABLE", rule) for name, rule in redis_rules]
    else:
        counts = (rd.stale_pending_hints.count, rd.idle_consumers.count)
        checks += [(name, str(n), status(n), rule)
                   for (name, rule), n in zip(redis_rules, counts, strict=True)]
    lines = _table(checks)

    lines += _examples(
        "stuck executions (oldest first)", pg.stuck_executions.count,
        ("TENANT", "EXECUTION", "WORKFLOW", "PROCESSED", "LAST", "WAITING"),
        [(x.tenant, x.execution_id, x.workflow, str(x.processed_seq), str(x.last_seq),
          _age(x.waiting)) for x in pg.stuck_executions.examples])
    lines += _examples(
        "dead events (oldest first)", pg.dead_events.count,
        ("TENANT", "EXECUTION", "SEQ", "EVENT", "DEAD FOR", "ERROR"),
        [(d.tenant, d.execution_id, str(d.seq), d.name, _age(d.age), _one_line(d.error))
         for d in pg.dead_events.examples])
    lines += _examples(
        "unpublished events (oldest first)", pg.unpublished_events.count,
        ("TENANT", "EXECUTION", "SEQ", "AGE"),
        [(u.tenant, u.execution_id, str(u.seq), _age(u.age))
         for u in pg.unpublished_events.examples])
    if rd is not None:
        lines += _examples(
            "stale pending hints (oldest first)", rd.stale_pending_hints.count,
            ("MESSAGE", "CONSUMER", "IDLE", "DELIVERIES", "EXECUTION", "SEQ"),
            [(p.message_id, p.consumer, _age(p.idle_ms / 1000), str(p.deliveries),
              p.hint.execution_id if p.hint else "-", str(p.hint.seq) if p.hint else "-")
             for p in rd.stale_pending_hints.examples])
        lines += _examples(
            "idle consumers (idlest first)", rd.idle_consumers.count,
            ("CONSUMER", "PENDING", "IDLE"),
            [(c.name, str(c.pending), _age(c.idle_ms / 1000))
             for c in rd.idle_consumers.examples])

    lines.append("")
    if rd is None:
        lines.append(f"redis: unreachable: {report.redis_error}")
    else:
        lines.append(f"redis: hint stream {_entries(rd.stream_length)} ({rd.stream_pending}"
                     f" pending), dead-letter stream {_entries(rd.dead_letters)}")
    problems = report.problems
    if problems:
        lines.append(f"flowrt doctor: {len(problems)} problem(s): "
                     + ", ".join(p.replace("_", " ") for p in problems))
    else:
        lines.append("flowrt doctor: healthy")
    return "\n".join(lines)
