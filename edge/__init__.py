"""Store edge agent: takes orders, keeps them safe, prints them, reconciles, alerts."""

import importlib

from edge.tls import no_system_ca_bundle

__version__ = "0.1.0"

# aiohttp makes two TLS contexts as it is imported, each parsing the system's whole CA bundle (about 30 ms and 1 MB
# each here, more on a small box), for clients that bring no context of their own. The agent's one HTTPS client, the
# central link, brings its own (edge/sync/client.py), so aiohttp is imported here, before any module of the agent
# can, without that work.
with no_system_ca_bundle():
    importlib.import_module("aiohttp")
