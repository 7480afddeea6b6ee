"""Standard Webhooks signatures (https://www.standardwebhooks.com/): what a sender puts in its headers. Apart from
the API's checks (edge/api/auth.py, which loads aiohttp) so the `edge` commands sign theirs without loading it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature over ``id.timestamp.body``: what a sender puts in webhook-signature."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(key: bytes, body: bytes) -> dict[str, str]:
    """The three headers of one signed request, under a fresh id and the time now."""
    msg_id, stamp = f"msg_{secrets.token_hex(12)}", int(time.time())
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": sign(key, msg_id, stamp, body)}
