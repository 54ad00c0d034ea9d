"""Every Redis key and group name flowrt uses, in one place."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GROUP", "Keys"]

GROUP = "workers"  # the one consumer group all workers read in


@dataclass(frozen=True)
class Keys:
    """Keys under one prefix (``FLOWRT_REDIS_PREFIX``).

    Deployments and tests can share a server by using different prefixes.
    """

    prefix: str

    @property
    def stream(self) -> str:
        """Wake-up hints: fields t (tenant), x (execution id), s (seq)."""
        return f"{self.prefix}:hints"

    @property
    def dead(self) -> str:
        """Dead-lettered hints, with the reason and the delivery count."""
        return f"{self.prefix}:dead"

    def rate(self, tenant: str) -> str:
        """The tenant's request token bucket (a hash: tokens, at); expires when full."""
        return f"{self.prefix}:rate:{tenant}"

    def lock(self, tenant: str, execution_id: str) -> str:
        return f"{self.prefix}:lock:{tenant}:{execution_id}"

    def wake(self, tenant: str, execution_id: str) -> str:
        """Raised by a worker that found the lock held and left its hints to the
        holder; taken by the holder when it releases (it looks at the log once more)."""
        return f"{self.prefix}:wake:{tenant}:{execution_id}"
