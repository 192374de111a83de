"""Timestamps: the engine counts integer milliseconds since the Unix epoch (UTC).

Reads at time ``T`` see every edit with timestamp ``<= T`` (inclusive upper bound, millisecond
resolution, as in CAVE). The wire uses float seconds; naive datetimes are taken as UTC.

>>> to_ms(1717243200.0)
1717243200000
>>> ms_to_iso(1717243200000)
'2024-06-01T12:00:00.000000+00:00'
"""

from __future__ import annotations

import datetime as dt
import math
import time

from cavelab.server.errors import InputError

FOREVER_MS = 2**62  # "not expired"

Timestamp = float | int | dt.datetime | str | None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_ms(ts: Timestamp, *, default_now: bool = True) -> int:
    """Convert float seconds, a datetime, an ISO string or ``None`` (now) to integer ms.

    Fractions of a millisecond are truncated, so a query at ``t`` seconds sees edits made at
    ``floor(t * 1000)`` ms and before.
    """
    if ts is None:
        if not default_now:
            raise InputError("a timestamp is required")
        return now_ms()
    if isinstance(ts, dt.datetime):
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=dt.timezone.utc)
        return int(math.floor(ts.timestamp() * 1000 + 1e-6))
    if isinstance(ts, str):
        s = ts.strip()
        try:
            return to_ms(float(s))
        except ValueError:
            pass
        try:
            return to_ms(dt.datetime.fromisoformat(s.replace("Z", "+00:00")))
        except ValueError as e:
            raise InputError(f"cannot read timestamp {ts!r}: use float Unix seconds or ISO 8601") from e
    if isinstance(ts, bool):
        raise InputError(f"cannot read timestamp {ts!r}")
    try:
        f = float(ts)
    except (TypeError, ValueError) as e:
        raise InputError(f"cannot read timestamp {ts!r}") from e
    if not math.isfinite(f):
        raise InputError(f"timestamp must be finite, got {ts!r}")
    return int(math.floor(f * 1000 + 1e-6))


def ms_to_seconds(ms: int) -> float:
    return ms / 1000.0


def ms_to_datetime(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000.0, tz=dt.timezone.utc)


def ms_to_iso(ms: int) -> str:
    return ms_to_datetime(ms).isoformat(timespec="microseconds")
