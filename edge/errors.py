"""One error type per boundary; each message names the part and what failed."""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(EdgeError):
    """A configuration value is missing or wrong; names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config {key}: {problem}")
        self.key = key
        self.problem = problem


class InvalidOrderError(EdgeError):
    """An order payload failed validation; names the field (e.g. ``items[2].qty``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class OrderConflictError(EdgeError):
    """The same order id arrived with different content; ``reason``: what differs, where it is not the stored order;
    ``field``: the first field that differs from the stored revision, where it is known."""

    def __init__(self, order_id: str, reason: str | None = None, *, field: str | None = None) -> None:
        self.reason = reason or f"order {order_id} already exists with different content"
        super().__init__(self.reason)
        self.order_id = order_id
        self.field = field


class MalformedOrderError(EdgeError):
    """The order's bytes are not a JSON document at all (empty, not UTF-8, not JSON, too large); ``error`` is the
    slug the HTTP API answers with."""

    def __init__(self, reason: str, *, error: str = "malformed_request") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


def intake_error_body(
    err: InvalidOrderError | OrderConflictError | MalformedOrderError | WrongStateError,
) -> dict[str, object]:
    """What a sender is told about an order that was not taken: the HTTP API's error body (edge/api/errors.py), and the
    MQTT intake's report on the events topic."""
    if isinstance(err, InvalidOrderError):
        return {"error": "invalid_order", "reason": err.reason, "field": err.field}
    if isinstance(err, OrderConflictError):
        # What was stored first may well have printed: only this one is known not to be stored, nor printed.
        body: dict[str, object] = {
            "error": "conflict",
            "reason": f"{err.reason}; this one was not stored",
            "order_id": err.order_id,
        }
        return body | ({"field": err.field} if err.field else {})
    if isinstance(err, WrongStateError):  # a revision reopening a cancelled order
        return {"error": "wrong_state", "reason": str(err)}
    return {"error": err.error, "reason": err.reason}


def too_large_body(limit: int) -> dict[str, object]:
    """The 413 body for a POST over ``api.max_body_bytes``, and the MQTT intake's report of a payload over the same
    limit: one wording for both doors, beside intake_error_body."""
    return {
        "error": "request_entity_too_large",
        "reason": f"the body is larger than api.max_body_bytes ({limit} bytes)",
    }


class NotFoundError(EdgeError):
    """A thing addressed by id does not exist."""


class AmbiguousError(EdgeError):
    """What a caller gave names two different things and it did not say which it means; ``field``: where it says so.
    Asked, never guessed: the wrong one acted on (a COPY of another order in the kitchen) is worse than asking."""

    def __init__(self, reason: str, *, field: str) -> None:
        super().__init__(reason)
        self.field = field


class WrongStateError(EdgeError):
    """A thing exists but is in a state that does not allow the action (e.g. releasing a printed job)."""


class UnreadableRowError(WrongStateError):
    """A stored row holds a value this version has no name for: a newer version wrote it before a downgrade, or a
    hand edit did. The row is left as it is (a newer version may read it again)."""

    def __init__(self, what: str, *, row_id: int, order_id: str, state: str) -> None:
        super().__init__(what)
        self.row_id, self.order_id, self.state = row_id, order_id, state  # state as stored


class StoredOrderUnreadableError(WrongStateError):
    """An order an older, laxer intake stored in a form this version cannot read even without a sender's limits (a
    type, a time without its zone): a change or cancel has nothing to compare with, so it is refused."""

    def __init__(self, order_id: str, err: InvalidOrderError) -> None:
        super().__init__(
            f"order {order_id} as stored cannot be read by this version ({err.field}: {err.reason}); it cannot be"
            " changed or cancelled here"
        )


class StoreError(EdgeError):
    """The database failed (full disk, read-only file, corrupt file)."""


class StoreUnreadableError(StoreError):
    """A database file this process's user cannot open (no read permission, or not there): says what to do, never
    that the file is damaged."""


class StoreUnavailableError(StoreError):
    """The database cannot take writes right now; callers should retry later."""


class StoreNotWritableError(StoreError):
    """A database file the agent's user may not write (put back by root): only a person's chown mends it, so the
    agent does not start (exit 2) rather than be restarted in vain."""


class StoreFullError(StoreError):
    """The card holding the database has no room for its write (SQLITE_FULL, ENOSPC)."""


# What a technician does when the data card turned read-only; in the refusal, /ready, the alert mails.
READ_ONLY_ADVICE = (
    "its file system is read-only (the kernel's answer to I/O errors of a failing SD card): reboot the box, which"
    " checks and repairs the card; replace the card if it happens again"
)


class StoreReadOnlyError(StoreError):
    """The data directory's file system is read-only (a failing card remounted so): no retry mends it while the box
    runs, only a reboot (its file system check) or a new card; the agent does not start on it."""


class StoreDamagedError(StoreError):
    """The database file is damaged (SQLite finds it malformed, or no database at all): no retry mends it, only a
    restore from a backup; the agent does not start on it."""


class SchemaTooOldError(StoreError):
    """A database at an older schema than this agent's, read directly by an `edge` command: `edge migrate` (or the
    agent's start) brings it up first."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer agent than this one."""


class DeviceError(EdgeError):
    """A printer or scanner failed; carries which device and over what transport."""

    def __init__(self, device_id: str, transport: str, message: str) -> None:
        super().__init__(f"{device_id} ({transport}): {message}")
        self.device_id = device_id
        self.transport = transport


class DeviceUnreachableError(DeviceError):
    """Nothing answered: the device is off, unplugged or the address is wrong."""


class DeviceWriteError(DeviceError):
    """The device accepted a connection but the job did not get through whole."""


class DeviceStalledError(DeviceWriteError):
    """The device took nothing of what waits for it for a while: a printer stopped in the middle of a job."""


class CentralApiError(EdgeError):
    """The central backend answered badly or not at all."""


class AlertError(EdgeError):
    """Sending an alert failed."""
