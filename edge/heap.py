"""The agent's heap on a small box (glibc's malloc; elsewhere these do nothing): few arenas, scratch given back, and
libraries only some moments need loaded at their first use."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import sys
import types

_M_ARENA_MAX = -8  # mallopt's parameter, from glibc's malloc.h


def share_arenas() -> None:
    """Before any thread starts: glibc gives each thread that allocates an arena of its own (up to eight a core), and
    the agent's threads (the database writer and readers, renders, the printing check) each kept part of one resident
    though they hardly allocate, since the GIL lets one run at a time. Two arenas measured 0.3–0.4 MB less idle RSS
    (MALLOC_ARENA_MAX=2, which this sets from inside, as systemd units of Python services often do)."""
    import ctypes  # here: importing the agent does not need it

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 2)


# Set while the start runs with the cyclic garbage collector paused (pause_collector): only that pause is undone.
_paused = False


def pause_collector() -> None:
    """`edge run`, as the process starts: no cyclic garbage collection until READY (resume_collector). The start
    allocates ~100,000 objects that live as long as the process (modules, classes, functions) and little garbage (~0.4
    MB in cycles, freed once it runs again); meanwhile the collector ran ~110 times, going through the same long-lived
    objects again and again (~20 ms of a 0.4 s start here, more on a Pi)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_collector() -> None:
    """The collector as it was before pause_collector, after one full collection; nothing if it did not pause it (an
    agent in a test process). Called right after READY, and after the first second of a start that takes longer (a
    full card's purge, a migration), so its garbage does not pile up. Every object of the start is young then: the
    collector's own first run, a young one, went through them all anyway, and left its free lists and the memory it
    freed for later (the bench's idle RSS ~0.1 MB higher than one full collection here)."""
    global _paused
    if _paused:
        _paused = False
        gc.enable()
        gc.collect()


def give_back_scratch() -> None:
    """Returns to the system the heap memory C code freed but glibc kept: jinja2 compiles each template with Python's
    compiler, whose scratch memory otherwise stays in the process for good (about 1 MB of a 50 MB budget on a box's
    first start, when no template cache exists yet). Does nothing where the C library is not glibc."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def lazy_module(name: str) -> types.ModuleType:
    """Module ``name``, executed at the first use of one of its attributes (importlib's LazyLoader), not now: for a
    library only some moments need, whose code would otherwise stay resident from the start. Already imported: as is."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
