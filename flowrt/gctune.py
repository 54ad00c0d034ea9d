"""The cycle collector of a flowrt process.

CPython runs a young collection every 700 net allocations, and every so often a full
one that walks every object the process holds. Under load the API and the workers
allocate fast, so full collections came often and each walked everything start-up
made (modules, the app's definitions, the pools): a pause of tens of milliseconds,
the 202's p99 (docs/performance.md). ``tune`` moves what exists at start into the
permanent generation (``gc.freeze``: never walked again) and raises the young
threshold, so collections are rarer and each walks only what requests made since.
``flowrt replay`` and ``flowrt export`` tune the same way: reading a long log
allocates as fast, and young collections walked it again and again.

At exit the interpreter's collector walks, once more, whatever the process still
holds: 0.08 s after ``flowrt replay`` of 20,000 events, 0.02 s when ``spare_exit``
has frozen it first. The objects are still freed by reference counting, or by the
exit itself.
"""

from __future__ import annotations

import gc

__all__ = ["spare_exit", "tune"]


def tune(threshold: int) -> None:
    """Freeze what start-up made and collect every ``threshold`` net allocations;
    0 leaves CPython's collector as it is."""
    if threshold <= 0:
        return
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)


def spare_exit() -> None:
    """Keep the interpreter's last collection from walking what the process holds;
    call it only when the process is about to exit."""
    gc.freeze()
