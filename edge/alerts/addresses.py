"""Mail addresses as SMTP without SMTPUTF8 (RFC 6531, which many relays lack) carries them. Its own module: the idna
package is imported here, never by the config layer (which checks only what the standard library can)."""

from __future__ import annotations

import idna

from edge.config import ascii_local_part


def smtp_address(address: str) -> str:
    """The address as it goes in the envelope and in From/To: an internationalised domain as its A-labels, per IDNA
    2008 with the UTS 46 mapping as browsers and DENIC use it (Python's own "idna" codec is IDNA 2003 and makes
    straße.de strasse.de, another domain). ValueError for a part before the @ that is not ASCII, or a domain IDNA
    refuses."""
    ascii_local_part(address)
    local, _, domain = address.rpartition("@")
    if domain.isascii():
        return address
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError as err:
        raise ValueError(f"{address!r}: {domain!r} is not a valid internationalised domain ({err})") from None
