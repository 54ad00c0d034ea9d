"""``Bus``: owns the Redis connections; publishes, reads, acks, reclaims and dead-letters
hints, and reports on the consumer group (stale pending hints, consumers) and prunes it.

What every event does (publish, read, take tokens, lock, ack and release) goes over
two ``Wire`` connections, one for the blocking read and one for the rest; everything
else (reclaim, reports, lock upkeep, admin) over redis-py's client."""

from __future__ import annotations

from importlib import resources
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.typing import StreamIdT

from ..events import Hint
from .errors_map import unavailable
from .keys import GROUP, Keys
from .lock import Lock
from .wire import Command, Wire

__all__ = ["Bus", "Consumer", "Delivery", "PendingHint", "unavailable"]


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One stream message: its id, the hint it carries, how often it was delivered."""

    message_id: str
    hint: Hint | None  # None when the fields were unreadable (acked and dropped)
    deliveries: int = 1


class PendingHint(msgspec.Struct, frozen=True, kw_only=True):
    """A hint delivered to a consumer and not acknowledged yet."""

    message_id: str
    consumer: str
    idle_ms: int  # since it was last delivered (or touched)
    deliveries: int
    hint: Hint | None  # None when the entry was deleted or is unreadable


class Consumer(msgspec.Struct, frozen=True, kw_only=True):
    """One consumer of the group (one per worker process that ever read)."""

    name: str
    pending: int  # hints delivered to it and not acknowledged
    idle_ms: int  # since it last read, claimed or touched


def _script(name: str) -> str:
    return resources.files("flowrt.bus").joinpath("lua", name).read_text(encoding="utf-8")


def _raise_first(replies: list[Any]) -> list[Any]:
    """A pipeline's replies, or its first error reply raised (as redis-py's pipelines do)."""
    for reply in replies:
        if isinstance(reply, rexc.RedisError):
            raise reply
    return replies


def _hint(fields: dict[str, str] | None) -> Hint | None:
    try:
        assert fields is not None
        return Hint(tenant=fields["t"], execution_id=fields["x"], seq=int(fields["s"]))
    except (AssertionError, KeyError, ValueError):
        return None


class Bus:
    """The Redis side. ``start`` connects lazily (no I/O in the constructor); ``close`` closes."""

    def __init__(self, url: str, keys: Keys, *, timeout: float = 5.0) -> None:
        self._url = url
        self.keys = keys
        self._timeout = timeout
        self._client: aioredis.Redis | None = None
        self._wire = Wire(url, timeout=timeout)
        self._reader = Wire(url, timeout=timeout)  # its own: XREADGROUP blocks it
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("Bus was closed; create a new one")
        # A pooled connection that Redis closed (a restart) fails on first reuse; one
        # quick retry on a fresh connection hides that. Retried XADDs may duplicate a
        # hint, which is harmless.
        self._client = aioredis.from_url(
            self._url, decode_responses=True, socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout, health_check_interval=15,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            retry_on_error=[rexc.ConnectionError, rexc.TimeoutError])
        self._ack = self._client.register_script(_script("ack.lua"))
        self._dead = self._client.register_script(_script("dead_letter.lua"))
        self._acquire = self._client.register_script(_script("acquire.lua"))
        self._extend = self._client.register_script(_script("extend.lua"))
        self._release = self._client.register_script(_script("release.lua"))
        self._finish = self._client.register_script(_script("finish.lua"))
        self._prune = self._client.register_script(_script("prune_consumers.lua"))
        self._rate = self._client.register_script(_script("rate.lua"))
        self._wire.start()
        self._reader.start()

    async def take_tokens(self, wants: list[tuple[tuple[str, float, int], int]]
                          ) -> list[tuple[int, float]]:
        """Take tokens from tenants' request buckets in one script run: for each
        ``((tenant, rate, burst), requests)``, ``(granted, seconds until the next token)``."""
        args: list[float | int] = []
        for (_tenant, rate, burst), n in wants:
            args += [rate, burst, n]
        async with unavailable():
            flat = await self._eval(self._rate, [self.keys.rate(t) for (t, _r, _b), _n in wants],
                                    args)
        return [(int(flat[i]), max(0.001, int(flat[i + 1]) / 1000))
                for i in range(0, len(flat), 2)]

    def lock(self, tenant: str, execution_id: str, ttl: float) -> Lock:
        """A new, not yet acquired lock on one execution."""
        return Lock(self.client, self.keys.lock(tenant, execution_id), ttl,
                    acquire=self._acquire, extend=self._extend, release=self._release,
                    wake=self.keys.wake(tenant, execution_id))

    async def locked(self, keys: list[str]) -> list[bool]:
        """Which of these lock keys are held right now (one round trip)."""
        if not keys:
            return []
        async with unavailable():
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.exists(key)
                return [bool(n) for n in await pipe.execute()]

    async def close(self) -> None:
        self._closed = True
        self._wire.close()
        self._reader.close()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("Bus is not started")
        return self._client

    async def ping(self) -> None:
        async with unavailable():
            await self.client.ping()

    async def ensure_group(self) -> None:
        """Create the stream and group if missing. Starts at 0 so no hint is skipped."""
        async with unavailable():
            try:
                await self.client.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
            except rexc.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def publish(self, hints: list[Hint]) -> None:
        stream = self.keys.stream
        async with unavailable():
            if len(hints) == 1:
                h = hints[0]
                await self._wire.call("XADD", stream, "*", "t", h.tenant, "x", h.execution_id,
                                      "s", h.seq)
                return
            _raise_first(await self._wire.pipeline([
                ("XADD", stream, "*", "t", h.tenant, "x", h.execution_id, "s", h.seq)
                for h in hints]))

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        """New hints for this consumer.

        Raises ``rexc.ResponseError`` with NOGROUP if the group vanished.
        """
        async with unavailable():
            # RESP2: [[stream, [[id, [field, value, ...]], ...]]], or None when none came
            reply: Any = await self._reader.call(
                "XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count, "BLOCK", block_ms,
                "STREAMS", self.keys.stream, ">", within=block_ms / 1000 + self._timeout)
        out: list[Delivery] = []
        for _stream, messages in reply or []:
            for message_id, fields in messages:
                out.append(Delivery(message_id=message_id, hint=_hint(
                    dict(zip(fields[::2], fields[1::2], strict=True)) if fields else None)))
        return out

    async def ack(self, message_ids: list[str]) -> int:
        if not message_ids:
            return 0
        async with unavailable():
            return int(await self._eval(self._ack, [self.keys.stream], [GROUP, *message_ids]))

    async def finish(self, lock: Lock, message_ids: list[str]) -> tuple[bool, bool]:
        """Ack ``message_ids``, release ``lock`` (if still ours) and take its wake flag,
        in one round trip: (released, woken). Woken: another worker found the lock
        held and left its hints to us, so look at the log once more."""
        [result] = await self.finish_many([(lock, message_ids)])
        return result

    async def acquire_many(self, locks: list[Lock]) -> list[bool]:
        """``Lock.acquire`` for many locks in one round trip (a pipeline of the script)."""
        replies = await self._scripts(self._acquire, [
            ([lock.key, lock.wake], [lock.token, lock.ttl_ms]) for lock in locks])
        return [bool(r) for r in replies]

    async def finish_many(self, items: list[tuple[Lock, list[str]]]) -> list[tuple[bool, bool]]:
        """``finish`` for many locks and their hints in one round trip."""
        replies = await self._scripts(self._finish, [
            ([self.keys.stream, lock.key, lock.wake], [GROUP, lock.token, *ids])
            for lock, ids in items])
        return [(bool(released), bool(woken)) for released, woken in replies]

    async def _eval(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """One script call: ``_scripts`` with one call."""
        [reply] = await self._scripts(script, [(keys, args)])
        return reply

    async def _scripts(self, script: AsyncScript,
                       calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """One script, many calls, one pipeline. A Redis that lost the script
        (restarted) answers NOSCRIPT to each: then it is loaded and all sent again."""
        pipeline: list[Command] = [("EVALSHA", script.sha, len(keys), *keys, *args)
                                   for keys, args in calls]
        async with unavailable():
            replies = await self._wire.pipeline(pipeline)
            if any(isinstance(r, rexc.NoScriptError) for r in replies):
                await self._wire.call("SCRIPT", "LOAD", script.script)
                replies = await self._wire.pipeline(pipeline)
            return _raise_first(replies)

    async def reclaim(self, consumer: str, min_idle_ms: int,
                      page: int = 100) -> tuple[list[Delivery], list[str]]:
        """Take over hints idle longer than ``min_idle_ms`` (XAUTOCLAIM, paged to the end).

        Returns the claimed deliveries with their delivery counts, and the ids that
        were pending but whose entries were deleted (the reconciler covers those).
        """
        claimed: list[Delivery] = []
        deleted: list[str] = []
        start = "0-0"
        async with unavailable():
            while True:
                reply: Any = await self.client.xautoclaim(
                    self.keys.stream, GROUP, consumer, min_idle_ms, start_id=start, count=page)
                start, messages = reply[0], reply[1]
                deleted.extend(reply[2] if len(reply) > 2 else [])
                if messages:
                    counts = await self._delivery_counts(consumer, [m[0] for m in messages])
                    claimed.extend(Delivery(message_id=mid, hint=_hint(fields),
                                            deliveries=counts.get(mid, 1))
                                   for mid, fields in messages)
                if start in ("0-0", b"0-0"):
                    break
        return claimed, deleted

    async def _delivery_counts(self, consumer: str, ids: list[str]) -> dict[str, int]:
        async with self.client.pipeline(transaction=False) as pipe:
            for mid in ids:
                pipe.xpending_range(self.keys.stream, GROUP, mid, mid, 1, consumername=consumer)
            replies = await pipe.execute()
        return {r[0]["message_id"]: int(r[0]["times_delivered"]) for r in replies if r}

    async def touch(self, consumer: str, message_ids: list[str]) -> None:
        """Reset the idle time of hints still being worked on, so nobody reclaims them.

        XCLAIM with JUSTID does not count a delivery, unlike a real redelivery.
        """
        if not message_ids:
            return
        ids: list[StreamIdT] = list(message_ids)  # list is invariant: widen str to StreamIdT
        async with unavailable():
            await self.client.xclaim(self.keys.stream, GROUP, consumer, 0, ids, justid=True)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        h = delivery.hint
        async with unavailable():
            await self._dead(
                keys=[self.keys.stream, self.keys.dead],
                args=[GROUP, delivery.message_id, h.tenant if h else "",
                      h.execution_id if h else "", h.seq if h else 0, delivery.deliveries,
                      reason])

    async def stats(self) -> tuple[int, int]:
        """Stream length and the group's pending count (0 when the group is missing)."""
        async with unavailable():
            length = await self.client.xlen(self.keys.stream)
            try:
                pending = await self.client.xpending(self.keys.stream, GROUP)
            except rexc.ResponseError:
                return int(length), 0
        return int(length), int(pending["pending"])

    async def dead_letter_count(self) -> int:
        """Entries in the dead-letter stream (kept as history; nothing trims it)."""
        async with unavailable():
            return int(await self.client.xlen(self.keys.dead))

    async def stale_pending(self, min_idle_ms: int, examples: int,
                            page: int = 1000) -> tuple[int, list[PendingHint]]:
        """Pending hints idle at least ``min_idle_ms`` (XPENDING IDLE, paged to the end).

        Returns how many, and the first ``examples`` of them (oldest ids first) with the
        hint each carries. ``(0, [])`` when the stream or the group is missing.
        """
        found: list[dict[str, Any]] = []
        count = 0
        start = "-"
        async with unavailable():
            while True:
                try:
                    rows: Any = await self.client.xpending_range(
                        self.keys.stream, GROUP, start, "+", page, idle=min_idle_ms)
                except rexc.ResponseError as exc:
                    if "NOGROUP" in str(exc) or "no such key" in str(exc):
                        return 0, []
                    raise
                count += len(rows)
                found.extend(rows[:max(examples - len(found), 0)])
                if len(rows) < page:
                    break
                start = f"({rows[-1]['message_id']}"  # exclusive: after the last one seen
            hints = await self._hints([r["message_id"] for r in found])
        return count, [PendingHint(message_id=r["message_id"], consumer=r["consumer"],
                                   idle_ms=int(r["time_since_delivered"]),
                                   deliveries=int(r["times_delivered"]),
                                   hint=hints.get(r["message_id"]))
                       for r in found]

    async def _hints(self, ids: list[str]) -> dict[str, Hint | None]:
        if not ids:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for mid in ids:
                pipe.xrange(self.keys.stream, mid, mid)
            replies = await pipe.execute()
        return {mid: _hint(reply[0][1] if reply else None)
                for mid, reply in zip(ids, replies, strict=True)}

    async def consumers(self) -> list[Consumer]:
        """The group's consumers (XINFO CONSUMERS); none when the stream or group is missing."""
        async with unavailable():
            try:
                rows: Any = await self.client.xinfo_consumers(self.keys.stream, GROUP)
            except rexc.ResponseError as exc:
                if "NOGROUP" in str(exc) or "no such key" in str(exc):
                    return []
                raise
        return [Consumer(name=r["name"], pending=int(r["pending"]), idle_ms=int(r["idle"]))
                for r in rows]

    async def prune_consumers(self, min_idle_ms: int) -> list[str]:
        """Delete the consumers that hold no pending hint and were idle ``min_idle_ms`` or more.

        Atomic (one script): a consumer with pending hints is never deleted, so no hint
        is dropped. A deleted consumer that reads again is simply recreated by Redis.
        Returns the names deleted.
        """
        async with unavailable():
            deleted: Any = await self._prune(keys=[self.keys.stream],
                                             args=[GROUP, min_idle_ms])
        return [str(name) for name in deleted]

    async def delete_consumer(self, consumer: str) -> bool:
        """Delete this consumer if it holds no pending hint (a worker leaving the group)."""
        async with unavailable():
            deleted: Any = await self._prune(keys=[self.keys.stream], args=[GROUP, 0, consumer])
        return bool(deleted)
