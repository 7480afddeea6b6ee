"""Manager alerts: events → grouped, throttled groups in SQLite → SMTP mails in German or English.

Nothing is imported with the package: a command that needs one part of it (the health timer's, every minute) does
not load the rest (the store, the templates).
"""
