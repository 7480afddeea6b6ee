"""The agent's heap on a small box (glibc's malloc; elsewhere these do nothing): few arenas, scratch given back, and
libraries only some moments need loaded at their first use."""

from __future__ import annotations

import contextlib
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
