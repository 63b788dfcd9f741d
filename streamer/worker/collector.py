"""Python's cyclic garbage collector, tuned while a worker runs (``Settings.gc_threshold``).

Why: a worker allocates several container objects per record (the decoded value, its
``Event``, the ``Pending`` that tracks it, its outputs) and holds a lane buffer's worth of
them in flight. With the interpreter's defaults a young collection runs every 700
allocations, about every hundred records: it walks the records in flight, promotes them, and
every few dozen young collections a full one walks every object of the process, the app, its
modules and the clients included. Freezing what exists when the worker starts (start-up
objects live as long as the process) and collecting the young generation every
``gc_threshold`` allocations keeps the collector's work proportional to what is garbage.

Measured with ``python -m bench`` (400,000 records, 4 partitions, one broker, the raw
loop at 2.6 µs of CPU per record): stateless_json 7.9-10.0 µs of CPU per record with the
defaults, 5.8-6.9 frozen with a young threshold of 700 to 50,000; count_emit_alo 12.8-13.4
against 8.2-11.0. The collector still runs: cycles (tracebacks of caught errors, closures)
are still freed, a young collection just finds more of the records already gone.

The process's settings are restored when the last worker running in it stops; objects
frozen meanwhile are thawed then. Both ends run a full collection in the worker's thread:
nothing is frozen that is already garbage, and what the thaw makes collectable is collected
there, not later in a client library's callback thread.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_running = 0  # workers of this process inside tuned_collector()
_saved: tuple[int, int, int] = (700, 10, 10)  # the thresholds before the first of them


@contextmanager
def tuned_collector(threshold: int) -> Iterator[None]:
    """While the block runs: start-up objects frozen (``gc.freeze``) and young collections
    every ``threshold`` allocations; 0 leaves the collector alone. Nested and
    concurrent uses (several workers in one process) tune once and restore once, when the
    last one leaves."""
    global _running, _saved
    if threshold == 0:
        yield
        return
    if _running == 0:
        _saved = gc.get_threshold()
        # Garbage is collected first, here, rather than frozen: a frozen Kafka client in a
        # cycle would be destroyed at some later collection, in whichever thread ran it,
        # and librdkafka aborts the process when a client is destroyed from one of its own
        # threads (a callback allocating is where a collection can start).
        gc.collect()
        gc.freeze()
        gc.set_threshold(threshold, _saved[1], _saved[2])
    _running += 1
    try:
        yield
    finally:
        _running -= 1
        if _running == 0:
            gc.set_threshold(*_saved)
            gc.unfreeze()
            gc.collect()  # what the thaw made collectable goes now, in this thread (above)
