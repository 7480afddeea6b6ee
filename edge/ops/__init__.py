"""Running the agent as an appliance: data-dir lock, backups, retention, health checks, doctor, start-up measurement."""

from edge.ops.backup import backup_database, restore_database
from edge.ops.housekeeping import Housekeeping, purge_history, purge_printed_orders
from edge.ops.lock import AgentRunningError, DataDirLock

__all__ = [
    "AgentRunningError",
    "DataDirLock",
    "Housekeeping",
    "backup_database",
    "purge_history",
    "purge_printed_orders",
    "restore_database",
]
