"""Running the agent as an appliance: data-dir lock, backups, retention, health checks, doctor, start-up measurement.

Nothing is imported with the package (see edge/alerts/__init__.py).
"""
