"""The relay's rest after it refused the login for good (535 5.7.8: the password changed at the provider): the same
smtp settings are not tried again for an hour, by the agent's outbox and by the health timer alike. Every try is one
more failed login: fail2ban bans the store's address after 5, Microsoft 365 locks the account after 10, and then no
alert of the agent's gets through either. New settings may be the fix: they are tried at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import secrets

from edge.config import SmtpSettings
from edge.store.alerts import LoginRest

LOGIN_HOLD_S = 3600.0


def settings_hash(smtp: SmtpSettings, salt: str) -> str:
    """What tells the settings a relay refused the login for from new ones, without the password: salted and slow
    (scrypt, 16 MB), since a backup of the database leaves the box. Takes ~50 ms: call it in a thread."""
    login = json.dumps([smtp.host, smtp.port, smtp.security, smtp.username, smtp.password.get()])
    return hashlib.scrypt(login.encode(), salt=bytes.fromhex(salt), n=2**14, r=8, p=1, dklen=32).hex()


async def begin_rest(smtp: SmtpSettings, error: str, until: float) -> LoginRest:
    """The rest for ``smtp``, refused with ``error``, until the wall time ``until``."""
    salt = secrets.token_hex(16)
    return LoginRest(settings=await asyncio.to_thread(settings_hash, smtp, salt), salt=salt, until=until, error=error)


async def rest_until(rest: LoginRest, smtp: SmtpSettings, now: float) -> float | None:
    """When ``rest`` ends for the settings ``smtp`` as they are now: never later than an hour from ``now``, whatever the
    wall clock did since it began (a caller that keeps the rest keeps this end, or a clock set back would make it
    start anew at every look). None when it is over, or the settings are not the ones refused."""
    # A rest damaged where it was kept (the health timer's file edited by hand, a card's fault) is no rest: never a
    # crash at every run, nor an end that never comes (NaN).
    if not isinstance(rest.until, int | float) or not math.isfinite(rest.until) or rest.until <= now:
        return None
    try:
        refused = await asyncio.to_thread(settings_hash, smtp, rest.salt) == rest.settings
    except ValueError:  # a salt that is not hex
        return None
    return min(rest.until, now + LOGIN_HOLD_S) if refused else None
