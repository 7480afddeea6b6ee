"""Scans API: recent scans with their outcome, counts per outcome, and each scanner's connection."""

from __future__ import annotations

from aiohttp import web

from edge.api.deps import ApiDeps
from edge.api.errors import error_response, query_limit
from edge.store.scans import SCAN_OUTCOMES, ScanStore


def add_routes(app: web.Application, deps: ApiDeps) -> None:
    store = ScanStore(deps.db)

    async def get_scans(request: web.Request) -> web.Response:
        """GET /api/v1/scans?limit=&outcome=&scanner=&order_id= — newest first."""
        outcome = request.query.get("outcome")
        if outcome is not None and outcome not in SCAN_OUTCOMES:
            return error_response(
                422, "invalid_request", f"outcome must be one of {', '.join(SCAN_OUTCOMES)}", field="outcome"
            )
        rows = await store.recent(
            limit=query_limit(request, default=50, maximum=1000),
            outcome=outcome,
            scanner=request.query.get("scanner"),
            order_id=request.query.get("order_id"),
        )
        scanners = [
            {
                "name": name,
                "port": reader.settings.port,
                "station": reader.settings.station,
                "connected": bool(reader.connected),
                "detail": reader.detail,
                "codes": reader.codes,
                "rejected": reader.rejected,
            }
            for name, reader in deps.scanners.items()
        ]
        return web.json_response(
            {"scans": [dict(r) for r in rows], "counts": await store.counts(), "scanners": scanners}
        )

    app.router.add_get("/api/v1/scans", get_scans)
