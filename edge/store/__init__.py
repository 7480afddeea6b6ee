"""SQLite: the only user of aiosqlite; one writer, migrations, one module of queries per table."""

from edge.store.db import Database
from edge.store.jobs import JobStore
from edge.store.orders import InsertResult, NewOrder, OrderStore

__all__ = ["Database", "InsertResult", "JobStore", "NewOrder", "OrderStore"]
