"""The alert fixtures (a real SMTP server on loopback), for orders whose totals are mailed to the manager."""

from tests.alerts.conftest import alert_settings, cert, server_tls, sink

__all__ = ["alert_settings", "cert", "server_tls", "sink"]
