"""``Worker``: reads hints in the consumer group, drives the engine one execution at a time.

Loops, all owned by the worker and stopped by ``stop()``:
- reader: XREADGROUP new hints; hints for an execution already in hand are
  coalesced into its job, so one pass covers them all;
- reclaimer: XAUTOCLAIM hints idle past the claim timeout (dead consumers),
  dead-letter those delivered more than ``max_deliveries`` times, and remove
  consumers left with nothing pending once idle for a few claim timeouts;
- relay: republish events whose hint never reached Redis (the log is the outbox);
- reconciler: re-hint executions whose processing lags the log, recreate the group;
- gauges: stream length and pending count, and what ``flowrt doctor`` checks.

On a clean stop the worker removes its own consumer from the group if it holds no
pending hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, start_http_server
from redis import exceptions as rexc

from .actions import RetryPolicy
from .app import App
from .bus import Bus, Delivery, Keys, Lock
from .bus.batcher import LockBatcher
from .engine import Engine
from .errors import ActionMissing, LeaseLost, Unavailable
from .events import Hint
from .health import Thresholds, check_postgres, check_redis
from .metrics import Metrics
from .settings import Settings
from .store import Database, Outbox, ProcessingStore
from .store.definitions import DefinitionStore
from .store.health import HealthStore
from .store.passes import PassBatcher

__all__ = ["Worker"]

_log = structlog.get_logger("flowrt.worker")

# A consumer with nothing pending is removed once idle this many claim timeouts: far
# past any live worker's idle time (it reads every second), and harmless even then
# (Redis recreates a consumer that reads again; one with pending hints is never removed).
_PRUNE_AFTER_CLAIM_TIMEOUTS = 3


class _Job:
    """The hints in hand for one execution; ``more`` says new ones came during a pass."""

    __slots__ = ("hint", "ids", "more", "reclaimed", "working")

    def __init__(self, hint: Hint, reclaimed: bool) -> None:
        self.hint = hint
        self.reclaimed = reclaimed  # from a dead consumer: its lock may linger until TTL
        self.ids: list[str] = []  # arrived, not yet covered by a pass
        self.working: list[str] = []  # covered by the pass that runs now
        self.more = False

    def add(self, message_id: str) -> None:
        self.ids.append(message_id)
        self.more = True

    def take(self) -> list[str]:
        self.working, self.ids, self.more = self.ids, [], False
        return self.working


class Worker:
    """An async context manager: ``async with Worker(settings, app) as w: await w.run()``."""

    def __init__(self, settings: Settings, app: App, *, name: str | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.app = app
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.metrics = Metrics(registry or CollectorRegistry())
        self._db = Database(settings.database_url,
                            max_size=settings.db_pool_max, timeout=settings.db_timeout)
        self._bus = Bus(settings.redis_url, Keys(settings.redis_prefix),
                        timeout=settings.redis_timeout)
        self._store = ProcessingStore(self._db)
        self._outbox = Outbox(self._db)
        self._definitions = DefinitionStore(self._db)
        self._health = HealthStore(self._db)
        self._thresholds = Thresholds.for_settings(settings)
        self._passes = PassBatcher(self._store, self.name)
        self._locks = LockBatcher(self._bus)
        self._engine = Engine(
            app, self._definitions, self._store, self._passes, self.metrics, worker=self.name,
            default_retry=RetryPolicy(attempts=settings.retry_attempts,
                                      initial_delay=settings.retry_initial_delay,
                                      max_delay=settings.retry_max_delay,
                                      timeout=settings.action_timeout),
            max_depth=settings.max_json_depth)
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._halts: set[asyncio.Event] = set()  # one per job holding a lock
        # Suspects (reclaimed, their event already started by a worker that vanished)
        # run one at a time: an event that crashes its process must not keep taking
        # the same neighbours down with it, and get them dead-lettered too.
        self._suspects = asyncio.Lock()
        # XREADGROUP blocks within the socket timeout, or every idle read would time out.
        self._block_ms = int(min(1.0, settings.redis_timeout / 2) * 1000)
        self._stopping = asyncio.Event()
        self._metrics_server: WSGIServer | None = None

    # lifecycle
    async def __aenter__(self) -> Worker:
        self.app.check()
        await self._db.start()
        await self._bus.start()
        await self._passes.start()
        await self._locks.start()
        try:
            await self._prepare()
            if self.settings.metrics_port:
                self._metrics_server, _thread = start_http_server(
                    self.settings.metrics_port, addr=self.settings.host,
                    registry=self.metrics.registry)
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _prepare(self) -> None:
        """Register the app's definitions and make sure the group exists.

        A worker may start before PostgreSQL or Redis (a whole-stack restart in any
        order): it waits for them, with back-off, until ``stop()``; a real error (a
        definition that conflicts with the registered one) still fails at once.
        """
        delay = 0.2
        while True:
            try:
                for wf in self.app.workflows:
                    created = await self._definitions.register(wf)
                    _log.info("definition registered" if created
                              else "definition already registered",
                              workflow=wf.name, version=wf.version)
                await self._bus.ensure_group()
                return
            except Unavailable as exc:
                if self._stopping.is_set():
                    return  # run() returns at once
                _log.warning("waiting for dependencies", error=str(exc), retry_in=delay)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, 5.0)

    async def _close(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        await self._locks.close()
        await self._passes.close()
        await self._bus.close()
        await self._db.close()

    def stop(self) -> None:
        """Stop reading and starting events; in-flight events finish within the grace."""
        self._stopping.set()
        for halt in self._halts:
            halt.set()

    async def run(self) -> None:
        _log.info("worker started", worker=self.name, concurrency=self.settings.concurrency)
        s = self.settings
        loops = [
            asyncio.create_task(self._read_loop(), name="reader"),
            asyncio.create_task(self._every(s.claim_interval, self._reclaim), name="reclaimer"),
            asyncio.create_task(self._every(s.relay_period, self._relay), name="relay"),
            asyncio.create_task(self._every(s.reconciler_period, self._reconcile),
                                name="reconciler"),
            asyncio.create_task(self._every(5.0, self._gauges), name="gauges"),
        ]
        try:
            await self._stopping.wait()
        finally:
            for t in loops:
                t.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self._drain_jobs()
            await self._leave_group()
        _log.info("worker stopped", worker=self.name)

    async def _leave_group(self) -> None:
        """Remove this worker's consumer if it holds no pending hint (else left for reclaim)."""
        try:
            if await self._bus.delete_consumer(self.name):
                _log.info("consumer removed from the group", worker=self.name)
        except Exception as exc:  # the reclaimers prune it later
            _log.warning("could not remove the consumer", worker=self.name, error=str(exc))

    async def _drain_jobs(self) -> None:
        if not self._tasks:
            return
        _log.info("finishing in-flight work", jobs=len(self._tasks),
                  grace=self.settings.shutdown_grace)
        _done, pending = await asyncio.wait(set(self._tasks), timeout=self.settings.shutdown_grace)
        for t in pending:
            t.cancel()  # their finally blocks release the locks; unacked hints get reclaimed
        if pending:
            await asyncio.wait(pending, timeout=5)

    # reading and dispatch
    async def _read_loop(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            free = self.settings.concurrency - len(self._jobs)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                deliveries = await self._bus.read(self.name, count=free, block_ms=self._block_ms)
                delay = 0.1
            except Unavailable as exc:
                _log.warning("cannot read hints", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except rexc.ResponseError as exc:
                # NOGROUP, or "UNBLOCKED the stream key no longer exists": Redis lost the
                # stream or the group. Recreate it, with back-off so this is no hot loop;
                # the reconciler re-hints whatever the lost entries were for.
                _log.warning("hint stream or group missing; recreating", error=str(exc),
                             retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                with contextlib.suppress(Unavailable, rexc.ResponseError):
                    await self._bus.ensure_group()
                continue
            except Exception:
                # Whatever else Redis or a bug throws, the reader must not die: a dead
                # reader leaves a worker that looks alive and does nothing.
                _log.exception("reading hints failed", retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            for d in deliveries:
                try:
                    await self._dispatch(d)
                except Exception as exc:  # only an unreadable hint's ack can raise here
                    _log.warning("cannot ack unreadable hint", error=str(exc))

    async def _dispatch(self, d: Delivery, reclaimed: bool = False) -> None:
        if d.hint is None:
            _log.warning("dropping unreadable hint", message_id=d.message_id)
            await self._bus.ack([d.message_id])
            return
        key = (d.hint.tenant, d.hint.execution_id)
        job = self._jobs.get(key)
        if job is None:
            job = self._jobs[key] = _Job(d.hint, reclaimed)
            task = asyncio.create_task(self._serve(key, job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        job.add(d.message_id)

    async def _serve(self, key: tuple[str, str], job: _Job) -> None:
        tenant, execution_id = key
        lock = self._bus.lock(tenant, execution_id, self.settings.lock_ttl)
        acquired = False
        covered: list[str] = []  # acked with the release; on errors they stay pending
        halted = False  # stopped, or the lock lost, with work maybe left: look after
        try:
            acquired = await self._acquire(lock, self.settings.lock_wait if job.reclaimed else 0)
            if not acquired:
                if job.reclaimed:
                    # Probably the dead consumer's lock, until its TTL: hand the wake-up
                    # back as a fresh hint (its delivery count starts over).
                    await self._bus.publish([job.hint])
                # Otherwise the holder is at work, and looks at the log's head again
                # after it releases the lock (see below): these hints add nothing.
                while True:
                    await self._bus.ack(job.take())
                    if not job.more:  # no await between this check and forgetting the job
                        break
                return
            halt = asyncio.Event()  # set when the lock is lost or the worker stops
            if self._stopping.is_set():
                halt.set()
            self._halts.add(halt)
            keeper = asyncio.create_task(self._keep(lock, job, halt))
            suspect = False
            try:
                if job.reclaimed and await self._store.attempted(tenant, execution_id):
                    await self._suspects.acquire()
                    suspect = True
                while True:
                    ids = job.take()
                    await self._engine.drain(tenant, execution_id, halt)
                    # Acked even when halted (lock lost, or stopping) with work left: the
                    # look at the log's head after the release re-hints what remains.
                    if halt.is_set() or not job.more:
                        break
                    await self._bus.ack(ids)
                # The last pass's hints, and any that came during it (covered the same
                # way), are acked with the lock's release: no await from here until
                # the job is forgotten, so no hint can join it unacked.
                covered = ids + job.take()
                halted = halt.is_set()
            finally:
                if suspect:
                    self._suspects.release()
                keeper.cancel()
                self._halts.discard(halt)
        except ActionMissing as exc:
            _log.error("cannot process: this worker lacks an action; left for another worker",
                       execution_id=execution_id, error=str(exc))
        except LeaseLost as exc:
            self.metrics.lease_lost.inc()
            _log.warning("lease lost; another worker owns the execution",
                         execution_id=execution_id, error=str(exc))
        except Unavailable as exc:
            _log.warning("dependency unavailable; hints stay pending for reclaim",
                         execution_id=execution_id, error=str(exc))
        except Exception:
            _log.exception("processing failed; hints stay pending for reclaim",
                           execution_id=execution_id)
        finally:
            self._jobs.pop(key, None)
            self._slot_freed.set()
            if acquired:
                await asyncio.shield(self._release(lock, job.hint, covered, halted))

    async def _release(self, lock: Lock, hint: Hint, covered: list[str], halted: bool) -> None:
        """Ack the hints covered, release the lock and take its wake flag (one script);
        if the flag was up, or the pass was halted, look at the log's head once more.

        A worker that got a hint for this execution while we held the lock raised the
        flag, acked the hint and left the work to us; an event appended after our last
        look is covered by this look, which comes after that worker saw the lock held.
        A pass halted (the worker stops, or lost the lock) acked its hints with work
        maybe left: the look hints it for the next worker instead of leaving it to the
        reconciler's grace.
        """
        woken = True  # if the script failed, look anyway
        try:
            _released, woken = await self._locks.finish(lock, covered)
        except Exception as exc:  # the lock expires by itself; hints stay pending
            _log.warning("ack and release failed", execution_id=hint.execution_id,
                         error=str(exc))
        if not (woken or halted):
            return
        try:
            last = await self._store.has_work(hint.tenant, hint.execution_id)
            if last is not None:
                await self._bus.publish([Hint(tenant=hint.tenant,
                                              execution_id=hint.execution_id, seq=last)])
                self.metrics.hints_republished.labels(source="release").inc()
        except Exception as exc:  # the reconciler re-hints lagging executions
            _log.warning("re-check after release failed", execution_id=hint.execution_id,
                         error=str(exc))

    async def _acquire(self, lock: Lock, wait: float) -> bool:
        started = time.monotonic()
        deadline = started + wait
        pause = 0.005
        while True:
            if await self._locks.acquire(lock):
                self.metrics.lock_wait_seconds.observe(time.monotonic() - started)
                return True
            if time.monotonic() >= deadline or self._stopping.is_set():
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)

    async def _keep(self, lock: Lock, job: _Job, lost: asyncio.Event) -> None:
        """Extend the lock while work runs, and keep the job's hints from looking idle."""
        period = self.settings.lock_ttl / 3
        valid_until = time.monotonic() + self.settings.lock_ttl
        while True:
            await asyncio.sleep(period)
            try:
                if not await lock.extend():
                    lost.set()
                    _log.warning("lock lost", key=lock.key)
                    return
                valid_until = time.monotonic() + self.settings.lock_ttl
                await self._bus.touch(self.name, job.working + job.ids)
            except Exception as exc:
                _log.warning("cannot extend lock", key=lock.key, error=str(exc))
                if time.monotonic() >= valid_until:
                    lost.set()
                    return

    # periodic loops
    async def _every(self, period: float, fn: Callable[[], Awaitable[None]]) -> None:
        while not self._stopping.is_set():
            try:
                await fn()
            except Unavailable as exc:
                _log.warning("periodic task skipped", task=fn.__name__, error=str(exc))
            except rexc.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # Redis lost the group (restarted empty): the reader and the
                    # reconciler recreate it; nothing to do here until then.
                    _log.warning("periodic task skipped: consumer group missing",
                                 task=fn.__name__)
                else:
                    _log.exception("periodic task failed", task=fn.__name__)
            except Exception:  # never let a loop die: log, and try again next period
                _log.exception("periodic task failed", task=fn.__name__)
            await asyncio.sleep(period)

    async def _reclaim(self) -> None:
        claimed, deleted = await self._bus.reclaim(self.name,
                                                   int(self.settings.claim_timeout * 1000))
        if deleted:
            # Their entries are gone, so nothing says which executions they were for:
            # the reconciler's scan of the log finds them.
            _log.info("pending hints were deleted; reconciling now", count=len(deleted))
            await self._reconcile()
        for d in claimed:
            self.metrics.messages_reclaimed.inc()
            if d.hint is not None and d.deliveries > self.settings.max_deliveries:
                await self._too_many_deliveries(d)
                continue
            await self._dispatch(d, reclaimed=True)
        pruned = await self._bus.prune_consumers(
            int(self.settings.claim_timeout * _PRUNE_AFTER_CLAIM_TIMEOUTS * 1000))
        if pruned:
            self.metrics.consumers_pruned.inc(len(pruned))
            _log.info("removed idle consumers with nothing pending", consumers=pruned)

    async def _too_many_deliveries(self, d: Delivery) -> None:
        assert d.hint is not None
        limit = self.settings.max_deliveries
        reason = f"delivered {d.deliveries} times (max {limit}) and attempted {limit}+ times"
        seq = await self._store.mark_dead(d.hint.tenant, d.hint.execution_id, reason, limit)
        if seq is None:
            # Redelivered often but hardly ever attempted: a dependency was down, not a
            # poison event. Hand the wake-up back as a fresh hint (its count starts over).
            _log.warning("hint redelivered often without failed attempts; renewing it",
                         execution_id=d.hint.execution_id, deliveries=d.deliveries)
            await self._bus.publish([d.hint])
            await self._bus.ack([d.message_id])
            return
        await self._bus.dead_letter(d, reason)
        self.metrics.dead_letters.inc()
        _log.error("hint dead-lettered; the event is dead and later events wait behind it",
                   execution_id=d.hint.execution_id, dead_seq=seq, deliveries=d.deliveries)

    async def _relay(self) -> None:
        hints = await self._outbox.unpublished(self.settings.relay_grace, 500)
        if hints:
            # One hint per execution wakes up all its events: send the latest seq only.
            latest: dict[tuple[str, str], Hint] = {}
            for h in hints:
                key = (h.tenant, h.execution_id)
                if key not in latest or h.seq > latest[key].seq:
                    latest[key] = h
            await self._bus.publish(list(latest.values()))
            await self._outbox.mark_published(hints)
            self.metrics.hints_republished.labels(source="relay").inc(len(latest))
            _log.info("relayed unpublished events", events=len(hints), hints=len(latest))

    async def _reconcile(self) -> None:
        await self._bus.ensure_group()
        lagging = [h for h in await self._store.lagging(self.settings.reconciler_grace, 500)
                   if (h.tenant, h.execution_id) not in self._jobs]
        # A held lock means a live worker is on it (and re-checks when it lets go), or a
        # dead one whose lock expires within its TTL: re-hint only the unlocked ones.
        held = await self._bus.locked([self._bus.keys.lock(h.tenant, h.execution_id)
                                       for h in lagging])
        hints = [h for h, locked in zip(lagging, held, strict=True) if not locked]
        if hints:
            await self._bus.publish(hints)
            self.metrics.hints_republished.labels(source="reconciler").inc(len(hints))
            _log.info("re-hinted lagging executions", count=len(hints))

    async def _gauges(self) -> None:
        # Each side on its own: one service down leaves the other's gauges current.
        redis, postgres = await asyncio.gather(
            check_redis(self._bus, self._thresholds, examples=0),
            check_postgres(self._health, self._thresholds, examples=0),
            return_exceptions=True)
        m = self.metrics
        if not isinstance(redis, BaseException):
            m.stream_length.set(redis.stream_length)
            m.stream_pending.set(redis.stream_pending)
            m.stale_pending_hints.set(redis.stale_pending_hints.count)
            m.idle_consumers.set(redis.idle_consumers.count)
        if not isinstance(postgres, BaseException):
            m.stuck_executions.set(postgres.stuck_executions.count)
            m.dead_events.set(postgres.dead_events.count)
            m.unpublished_events.set(postgres.unpublished_events.count)
        for result in (redis, postgres):
            if isinstance(result, BaseException):
                raise result
