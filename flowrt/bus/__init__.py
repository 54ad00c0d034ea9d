"""Redis: the stream of wake-up hints, the consumer group, the per-execution lock.

Everything here is a hint or a lease; PostgreSQL holds the truth, and Redis may lose
any of it (the relay and the reconciler rebuild what matters).
"""

from .keys import Keys
from .lock import Lock
from .stream import Bus, Consumer, Delivery, PendingHint

__all__ = ["Bus", "Consumer", "Delivery", "Keys", "Lock", "PendingHint"]
