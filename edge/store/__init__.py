"""SQLite: the only user of aiosqlite; one writer, migrations, one module of queries per table.

Nothing is imported with the package (see edge/alerts/__init__.py).
"""
