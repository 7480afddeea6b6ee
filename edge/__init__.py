"""Store edge agent: takes orders, keeps them safe, prints them, reconciles, alerts."""

import contextlib
import importlib._abc  # importlib.abc's Loader, without importlib.abc's import of importlib.resources (~2 ms, 0.1 MB)
import importlib.machinery
import importlib.util
import signal
import sys
import threading
import types

from edge.tls import no_system_ca_bundle

# The one place: pyproject.toml (the package's metadata) and upgrade.sh read it from this line.
__version__ = "0.1.0"


class _AiohttpWithoutCaBundle(importlib._abc.Loader):
    """aiohttp makes two TLS contexts as it is imported, each parsing the system's whole CA bundle (about 30 ms and
    1 MB each here, more on a small box), for clients that bring no context of their own. The agent's one HTTPS
    client, the central link, brings its own (edge/sync/client.py), so aiohttp is imported without that work, by
    whichever module of the agent imports it first, while no other thread runs (the agent: at its start). Not
    imported here: a command that only asks the agent something (the health timer's, every minute) never loads it
    (~0.3 s of CPU here)."""

    def __init__(self) -> None:
        self._loader: importlib._abc.Loader | None = None

    def find_spec(
        self, fullname: str, path: object = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "aiohttp":
            return None
        sys.meta_path.remove(self)  # once: the finders after it find the package
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        assert self._loader is not None
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        assert self._loader is not None
        module.__loader__ = module.__spec__.loader = self._loader  # type: ignore[union-attr]
        # The trick points SSL_CERT_FILE at nothing for the whole process: a context another thread made meanwhile
        # (`edge doctor`'s mail check, while its central check imports aiohttp) would trust no CA at all.
        alone = threading.active_count() == 1
        _builtin_mime_types()
        with no_system_ca_bundle() if alone else contextlib.nullcontext():
            self._loader.exec_module(module)


def _builtin_mime_types() -> None:
    """aiohttp's file responses build their table of types as aiohttp.web is imported, from the system's mime.types
    too (2,286 lines on Debian): 0.4 MB kept for good, of a 50 MB budget, for a status page whose one file (status.js)
    Python's own table knows. The table is made here first, from Python's own types, for the whole process."""
    import mimetypes

    if not mimetypes.inited:
        system, mimetypes.knownfiles = mimetypes.knownfiles, []
        try:
            mimetypes.init()
        finally:
            mimetypes.knownfiles = system


if "aiohttp" not in sys.modules:
    sys.meta_path.insert(0, _AiohttpWithoutCaBundle())

# `edge run`: SIGHUP (a reload asked for) is the agent's to handle, as an orderly stop and a restart (edge/app.py,
# run_until_signal); until its loop does (imports, the config: half a second here, seconds on a slow card), ignored.
# Python's default ended the process there, killed by the signal, which systemd counts as a clean exit (verify71).
if sys.argv[1:2] == ["run"] and threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from edge.heap import pause_collector

    pause_collector()  # until READY: edge/heap.py
