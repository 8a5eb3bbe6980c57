"""Load a model actor's long-lived objects without Python's cyclic collector walking them again
and again, then take them out of its sight.

Importing torch and transformers and loading a model makes ~700k Python objects that live as
long as the actor. A full collection walks every tracked object, and the imports alone set off
seven of them; afterwards, the objects each shard allocates set off more, each walking the
whole heap while holding the GIL that the forward lanes' Python glue needs. Measured in a
MiniLM extraction actor on this project's 2-core machine (3 runs each):
- start-up (imports, model load, lanes) 3.9-4.5 s with the collector on, of which 0.7-0.8 s of
  full collections; 3.0-3.2 s with it paused;
- the four split-1 shards of rt-polarity: two full collections, 0.4 s with the GIL held;
  0.02 s once the start-up heap is frozen.

So a model actor loads inside `loading_frozen_heap`: the collector is paused, and when the load
is done everything it made is frozen (``gc.freeze``): later collections walk only what the
shards create. The load's own cyclic garbage is frozen with it rather than collected: one
collection over the ~700k objects would free ~9k of them (no measurable memory: 575 -> 576 MiB
resident) for 0.35 s of the actor's start. The ``gc`` module's documentation describes the same
pattern (disable early, freeze once built) for servers that fork.
"""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def loading_frozen_heap() -> Iterator[None]:
    """Pause the cyclic collector for the block, then freeze every object that exists.

    The collector is switched back on only if it was on before (a caller that disabled it
    keeps it disabled), on failure too.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
