"""TLS for the agent's own connections out (central API, mail relay, MQTT broker): always verifying."""

from __future__ import annotations

import contextlib
import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

from edge.errors import ConfigError

# OpenSSL's verdicts on a certificate outside its dates (X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED):
# what a box whose clock is wrong (no battery, NTP blocked by the shop's firewall) makes of a valid certificate.
_OUT_OF_DATE = {9: "not yet valid", 10: "expired"}


def clock_hint(err: BaseException | None) -> str:
    """For a certificate refused for its dates (``err`` or what caused it): what the box's clock says, as the likely
    cause; "" for any other error."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        # (aiohttp's ClientConnectorCertificateError is an SSLCertVerificationError without a verify_code.)
        verdict = _OUT_OF_DATE.get(getattr(err, "verify_code", None) or 0)
        if isinstance(err, ssl.SSLCertVerificationError) and verdict:
            now = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
            return (
                f"; the box's clock says {now} UTC: if that is wrong, a valid certificate looks {verdict} (set the "
                "clock: NTP, timedatectl)"
            )
        # aiohttp keeps the ssl error as certificate_error; aiosmtplib and others chain it.
        err = getattr(err, "certificate_error", None) or err.__cause__ or err.__context__
    return ""


def verifying_context(ca_file: Path | None, setting: str = "ca_file") -> ssl.SSLContext:
    """The system's CAs, host names checked, plus ``ca_file`` for a company relay or broker with its own CA.
    ``create_default_context(cafile=...)`` would load only that file and drop the system CAs, so the file is added.
    Blocking: it reads the CA files, so callers build it once, in a thread. A file that cannot be read or holds no
    certificate is a ConfigError naming ``setting`` and the file (OpenSSL's own words name neither)."""
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except FileNotFoundError:
            raise ConfigError(setting, f"{ca_file}: no such file") from None
        except OSError as err:  # ssl.SSLError is one: a file that holds no certificate
            reason = getattr(err, "reason", None) or err.strerror or err
            raise ConfigError(
                setting, f"{ca_file}: cannot be used as CA certificates ({reason}): it should be the CA's PEM file"
            ) from None
    return context


@contextlib.contextmanager
def no_system_ca_bundle() -> Iterator[None]:
    """Within it, a TLS context made with the system's defaults reads no CA bundle: OpenSSL takes the bundle's path
    from SSL_CERT_FILE each time one is made (the hashed CA directory, read only when a certificate is looked up,
    stays). For a library that makes such contexts as it is imported, for callers that bring none, when the agent
    always brings its own. The operator's own SSL_CERT_FILE, if any, is back afterwards."""
    before = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = os.devnull
    try:
        yield
    finally:
        if before is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = before
