"""Scans API: recent scans with their outcome, counts per outcome, and each scanner's connection."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from edge.api.deps import ApiDeps
from edge.api.errors import error_response, query_limit
from edge.scanners import Scanner
from edge.states import ScanOutcome


def scanner_json(reader: Scanner) -> dict[str, Any]:
    """A scanner's connection as the scans list and the status page show it; never opened yet counts as gone."""
    return {
        "name": reader.name,
        "port": reader.settings.port,
        "station": reader.settings.station,
        "connected": bool(reader.connected),
        "detail": reader.detail,
        "codes": reader.codes,
        "rejected": reader.rejected,
    }


def add_routes(app: web.Application, deps: ApiDeps) -> None:
    store = deps.scans

    async def get_scans(request: web.Request) -> web.Response:
        """GET /api/v1/scans?limit=&outcome=&scanner=&order_id= — newest first."""
        outcome = request.query.get("outcome")
        if outcome is not None and outcome not in set(ScanOutcome):
            return error_response(
                422, "invalid_request", f"outcome must be one of {', '.join(ScanOutcome)}", field="outcome"
            )
        scans = await store.recent(
            limit=query_limit(request, default=50, maximum=1000),
            outcome=ScanOutcome(outcome) if outcome is not None else None,
            scanner=request.query.get("scanner"),
            order_id=request.query.get("order_id"),
        )
        scanners = [scanner_json(reader) for reader in deps.scanners.values()]
        return web.json_response(
            {"scans": [dataclasses.asdict(s) for s in scans], "counts": await store.counts(), "scanners": scanners}
        )

    app.router.add_get("/api/v1/scans", get_scans)
