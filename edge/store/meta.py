"""The meta table: one value per key (cursors, marks, what the agent keeps between runs). Imports nothing, so the
alert tables' users that open no database (the health timer) load no store with it."""

UPSERT_META = "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
