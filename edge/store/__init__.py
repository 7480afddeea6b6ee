"""SQLite: the only user of aiosqlite; one writer, migrations, one module of queries per table."""

from edge.store.db import Database
from edge.store.jobs import JOB_STATES, JobStore
from edge.store.orders import InsertResult, NewOrder, OrderStore

__all__ = ["JOB_STATES", "Database", "InsertResult", "JobStore", "NewOrder", "OrderStore"]
