"""The meta table: one value per key (cursors, marks, what the agent keeps between runs). Imports nothing, so the
alert tables' users that open no database (the health timer) load no store with it."""

UPSERT_META = "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
# The value that tells the agent's database file from a copy of it: kept for the file's life, left out of every backup
# (copy_database), so a backup put back by hand under the running agent is not taken for the file it opened.
INCARNATION_KEY = "incarnation"
