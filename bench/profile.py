"""How long and how much each section runs: the default profile (about 4-5 minutes on
2 cores) and ``--quick`` (under a minute, same sections, smaller counts)."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["FULL", "QUICK", "Profile"]


@dataclass(frozen=True)
class Profile:
    name: str
    clients: int = 32  # concurrent HTTP clients (and floor clients)
    core_events: int = 20_000
    floor_warmup: float = 1.0
    floor_seconds: float = 5.0
    xread_messages: int = 50_000
    xread_count: int = 100
    round_trips: int = 100  # per server, back to back and again spaced out
    round_trip_gap: float = 0.01
    ingest_executions: int = 100
    ingest_warmup: float = 2.0
    ingest_seconds: float = 15.0
    e2e_workers: tuple[int, ...] = (1, 2)
    e2e_executions: int = 100
    e2e_events: int = 150  # per execution
    moderate_share: float = 0.3  # of the measured W=2 maximum
    moderate_seconds: float = 20.0
    light_share: float = 0.1  # the same open loop at a lighter load, for comparison
    light_seconds: float = 10.0
    completions: int = 3_000
    history_events: int = 20_000
    history_short: int = 100
    history_batch: int = 200
    history_rounds: int = 5
    history_singles: int = 50
    replay_runs: int = 2

    def with_clients(self, clients: int | None) -> Profile:
        return self if clients is None else replace(self, clients=clients)


FULL = Profile("full")
QUICK = Profile("quick", floor_warmup=0.5, floor_seconds=2.0, xread_messages=10_000,
                ingest_warmup=1.0, ingest_seconds=3.0, e2e_executions=50, e2e_events=20,
                moderate_seconds=4.0, light_seconds=3.0, completions=300, history_rounds=1,
                history_singles=10, replay_runs=1)
