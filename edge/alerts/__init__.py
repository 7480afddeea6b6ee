"""Manager alerts: events → grouped, throttled groups in SQLite → SMTP mails in German or English."""

from edge.alerts.alerter import Alerter, make_renderer
from edge.alerts.mailer import Mailer

__all__ = ["Alerter", "Mailer", "make_renderer"]
