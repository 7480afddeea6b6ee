"""Alert outbox routes: what waits or was refused for good, retry or discard one mail, send a test mail through it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from edge.api.deps import ApiDeps
from edge.api.errors import add_post, error_response, path_id

if TYPE_CHECKING:
    from edge.alerts.alerter import Alerter  # imported only when mail is configured ([smtp] host)

ALERTER: web.AppKey[Alerter] = web.AppKey("alerter")
_OFF = "alert mail is off: no SMTP server is configured ([smtp] host)"


def _alerter(request: web.Request) -> Alerter | None:
    return request.app.get(ALERTER)


async def get_outbox(request: web.Request) -> web.Response:
    """GET /api/v1/alerts/outbox — mails waiting, dead-lettered mails and mails taken as delivered unconfirmed by the
    relay (newest first), what memory holds."""
    alerter = _alerter(request)
    if alerter is None:
        return web.json_response({"enabled": False, "reason": _OFF})
    status = await alerter.outbox_status()
    return web.json_response(
        {
            "enabled": True,
            "pending": status.pending,
            "dead": [m.public() for m in status.dead],
            "unconfirmed": [m.public() for m in status.unconfirmed],
            "unrecorded": status.unrecorded,
            "waiting_signals": status.waiting_signals,
            "server_error": status.server_error,
        }
    )


async def post_act(request: web.Request) -> web.Response:
    """POST /api/v1/alerts/outbox/{mail_id}/retry or /discard — a person's decision about one mail."""
    alerter = _alerter(request)
    if alerter is None:
        return error_response(409, "not_configured", _OFF)
    mail_id = path_id(request, "mail_id", "alert mail")
    act = alerter.retry_mail if request.path.endswith("/retry") else alerter.discard_mail
    return web.json_response((await act(mail_id)).public())


async def post_test(request: web.Request) -> web.Response:
    """A test mail through the outbox, attempted at once; answers how it went and what else waits."""
    alerter = _alerter(request)
    if alerter is None:
        return error_response(409, "not_configured", _OFF)
    mail = await alerter.send_test()
    status = await alerter.outbox_status()
    return web.json_response(
        {
            "mail": mail.public(),
            "pending": status.pending,
            "dead": len(status.dead),
            "server_error": status.server_error,
        },
        status=201,
    )


def add_routes(app: web.Application, deps: ApiDeps) -> None:
    """Without SMTP (``deps.alerter`` None) the routes still answer, saying alert mail is off."""
    if deps.alerter is not None:
        app[ALERTER] = deps.alerter
    app.router.add_get("/api/v1/alerts/outbox", get_outbox)
    add_post(app, "/api/v1/alerts/outbox/{mail_id}/retry", post_act)
    add_post(app, "/api/v1/alerts/outbox/{mail_id}/discard", post_act)
    add_post(app, "/api/v1/alerts/test", post_test)
