"""One unit of work: take an execution's lease, rebuild its state from the log, process
every event not yet processed in seq order, commit each outcome fenced.

The caller (the worker) holds the execution's Redis lock around ``drain``; the lock
keeps workers from doing the same work twice, the fenced commit makes sure that
even when it fails (a paused process outlives its lock) nothing is applied twice.
No database transaction is open while an action runs.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import structlog

from .actions import ActionContext, RetryPolicy, backoff
from .app import App
from .definition import Workflow
from .errors import ActionMissing
from .events import STARTED, ActionRecord, Event, Outcome
from .jsonvalues import problem_in, storable_text
from .machine import Decision, Snapshot, apply, decide, error_actions
from .metrics import Metrics
from .store.definitions import DefinitionStore
from .store.processing import Committed, Lease, ProcessingStore

__all__ = ["Engine", "Passes"]

_log = structlog.get_logger("flowrt.engine")


class Passes(Protocol):
    """Where a pass takes its lease, counts an attempt on each later event (by a mark,
    or with the commit before it), and commits each outcome, fenced (the worker's
    ``PassBatcher``: its concurrent jobs' statements go together)."""

    async def take_lease(self, tenant: str, execution_id: str) -> Lease | None: ...

    async def mark_processing(self, lease: Lease, seq: int) -> int: ...

    async def commit(self, lease: Lease, seq: int, outcome: Outcome, snapshot: Snapshot,
                     mark_next: int = 0) -> Committed: ...


class Engine:
    def __init__(self, app: App, definitions: DefinitionStore, store: ProcessingStore,
                 passes: Passes, metrics: Metrics, *, worker: str, default_retry: RetryPolicy,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 jitter: Callable[[], float] = random.random, max_depth: int = 32) -> None:
        self._app = app
        self._definitions = definitions
        self._store = store
        self._passes = passes
        self._metrics = metrics
        self._worker = worker
        self._default_retry = default_retry
        self._sleep = sleep
        self._jitter = jitter
        self._max_depth = max_depth

    async def drain(self, tenant: str, execution_id: str, halt: asyncio.Event) -> int:
        """Process everything pending for one execution; return how many events were committed.

        ``halt`` (the lock was lost, or the worker is stopping) ends the work between
        two events. Raises ``LeaseLost`` when another worker took over, ``Unavailable``
        when a dependency is down; either way nothing half-done is visible.
        """
        lease = await self._passes.take_lease(tenant, execution_id)
        if lease is None:  # processed already, blocked, or unknown: a redundant hint
            return 0
        workflow = await self._workflow(lease)
        # The projection is what the log folds to up to processed_seq: every commit
        # writes it with the outcome, fenced, in one statement. So a pass starts from
        # it and reads only the events after it, whatever the history's length
        # (``flowrt replay`` re-derives the projection from the whole log to check).
        snapshot = lease.snapshot
        batch: Sequence[Event] = lease.pending
        head = lease.last_seq
        done = 0
        # the event's decision, when the commit before it made it (and then counted its
        # attempt if it runs actions)
        ahead: Decision | None = None
        while True:
            for i, event in enumerate(batch):
                if halt.is_set():
                    return done
                # not when stopping: an attempt counted for actions that never ran
                following = (batch[i + 1] if i + 1 < len(batch) and not halt.is_set()
                             else None)
                snapshot, head, ahead = await self._process(lease, workflow, snapshot,
                                                            event, following, ahead)
                done += 1
            # each commit said where the log's head was: no query unless more came
            if head <= snapshot.seq or halt.is_set():
                return done
            batch = await self._store.pending(tenant, execution_id, snapshot.seq)
            if not batch:  # cannot happen while we hold the lease; never spin
                return done

    async def _workflow(self, lease: Lease) -> Workflow:
        return (self._app.workflow(lease.workflow, lease.version)
                or await self._definitions.get(lease.workflow, lease.version))

    async def _process(self, lease: Lease, workflow: Workflow, snapshot: Snapshot,
                       event: Event, following: Event | None,
                       ahead: Decision | None) -> tuple[Snapshot, int, Decision | None]:
        """Decide (unless ``ahead`` did), run the actions, commit; the new snapshot, the
        log's head, and ``following``'s decision if this commit counted its attempt."""
        with structlog.contextvars.bound_contextvars(
                execution_id=lease.execution_id, event_id=event.event_id, seq=event.seq,
                worker=self._worker):
            started = time.monotonic()
            decision = ahead if ahead is not None else decide(workflow, snapshot, event)
            records: list[ActionRecord] = []
            if decision.actions or decision.on_error:
                missing = self._missing(workflow, decision)
                if missing:
                    raise ActionMissing(f"{workflow.name} v{workflow.version} names actions"
                                        f" this worker's app does not register: {missing}")
                # the lease counted the first event's attempt, the commit before a later
                # one's if it could; else a mark of its own, before the actions run
                if event.seq != lease.processed_seq + 1 and ahead is None:
                    await self._passes.mark_processing(lease, event.seq)
                records = await self._run_actions(lease, workflow, snapshot, event, decision)
            after, outcome = apply(workflow, snapshot, event, decision, records)
            nxt = self._will_run(workflow, after, event, following)
            mark_next = following.seq if nxt is not None and following is not None else 0
            committed = await self._passes.commit(lease, event.seq, outcome, after, mark_next)
            labels = {"workflow": workflow.name}
            self._metrics.events_processed.labels(outcome=outcome.status, **labels).inc()
            self._metrics.processing_seconds.labels(**labels).observe(time.monotonic() - started)
            if event.created_at is not None:
                latency = (committed.processed_at - event.created_at).total_seconds()
                self._metrics.latency_seconds.labels(**labels).observe(max(latency, 0.0))
            _log.info("event processed", name=event.name, outcome=outcome.status,
                      from_state=outcome.from_state, to_state=outcome.to_state,
                      error=outcome.error)
            return after, committed.last_seq, nxt

    def _missing(self, workflow: Workflow, decision: Decision) -> list[str]:
        return sorted({n for n in decision.actions + error_actions(workflow, decision)
                       if self._app.get_action(n) is None})

    def _will_run(self, workflow: Workflow, after: Snapshot, event: Event,
                  following: Event | None) -> Decision | None:
        """``following``'s decision if it comes right after ``event`` and will run
        actions this worker has, for the commit of ``event`` to count its attempt (one
        statement less per later event of a pass); else None. Deciding is pure, so
        this is the decision ``following`` gets, and it is not made again."""
        if following is None or following.seq != event.seq + 1:
            return None
        try:
            decision = decide(workflow, after, following)
        except Exception:  # never let the next event cost this one its commit
            return None
        if not (decision.actions or decision.on_error) or self._missing(workflow, decision):
            return None
        return decision

    async def _run_actions(self, lease: Lease, workflow: Workflow, snapshot: Snapshot,
                           event: Event, decision: Decision) -> list[ActionRecord]:
        data: dict[str, Any] = (dict(event.payload.get("input") or {}) if event.name == STARTED
                                else dict(snapshot.data))
        records: list[ActionRecord] = []
        queue = list(decision.actions)
        failed = False
        while queue:
            record = await self._run_one(lease, workflow, snapshot, event, queue.pop(0), data)
            records.append(record)
            if record.ok:
                data.update(record.result or {})
                continue
            if failed:  # an on_error entry action failed too: the event fails
                break
            # The first failure: the rest of the transition is skipped; on_error's entry runs.
            failed = True
            queue = list(error_actions(workflow, decision))
        return records

    async def _run_one(self, lease: Lease, workflow: Workflow, snapshot: Snapshot, event: Event,
                       name: str, data: dict[str, Any]) -> ActionRecord:
        registered = self._app.get_action(name)
        assert registered is not None  # checked before any action ran
        policy = registered.retry or self._default_retry
        key = f"{lease.tenant}:{lease.execution_id}:{event.seq}:{name}"
        error = ""
        for attempt in range(1, policy.attempts + 1):
            log = structlog.get_logger("flowrt.action").bind(action=name, attempt=attempt)
            ctx = ActionContext(execution_id=lease.execution_id, tenant=lease.tenant,
                                workflow=workflow.name, version=workflow.version, event=event,
                                state=snapshot.state, data=dict(data), attempt=attempt,
                                idempotency_key=key, log=log)
            try:
                # In this task (asyncio.wait_for would wrap the action in a task of its own)
                deadline = asyncio.timeout(policy.timeout)
                try:
                    async with deadline:
                        result = await registered.fn(ctx)
                except TimeoutError:
                    if not deadline.expired():  # the action's own, e.g. a client's timeout
                        raise
                    raise TimeoutError(f"timed out after {policy.timeout:g} s") from None
                if result is not None and not isinstance(result, dict):
                    raise TypeError(f"returned {type(result).__name__}, expected a dict or None")
                bad = problem_in(result, self._max_depth) if result is not None else None
                if bad is not None:  # would fail the commit on every try: the action failed
                    raise ValueError(f"result cannot be stored: {bad}")
                self._metrics.actions.labels(action=name, outcome="ok").inc()
                return ActionRecord(name=name, ok=True, result=result, attempts=attempt)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = storable_text(f"{type(exc).__name__}: {exc}")
                last = attempt == policy.attempts
                outcome = "failed" if last else "retry"
                self._metrics.actions.labels(action=name, outcome=outcome).inc()
                log.warning("action failed", error=error, final=last)
                if not last:
                    await self._sleep(backoff(policy, attempt, self._jitter()))
        return ActionRecord(name=name, ok=False, error=error, attempts=policy.attempts)

