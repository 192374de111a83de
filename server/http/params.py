"""Parsing of CAVE wire values: IDs, booleans, timestamps, bounds, JSON and uint64 bodies.

Pure functions (no tornado); each raises :class:`~cavelab.server.errors.InputError` (400) with a
message that names the parameter and the expected form.

>>> parse_bounds("0-10_0-20_0-30").tolist()
[[0, 0, 0], [10, 20, 30]]
>>> parse_bool("False", "latest")
False
>>> parse_id("864691135", "node_id")
864691135
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from cavelab.server.engine.timestamps import to_ms
from cavelab.server.errors import InputError

MAX_ID = 2**64 - 1
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}
_AXIS = re.compile(r"^\s*(-?\d+(?:\.\d*)?)\s*-\s*(-?\d+(?:\.\d*)?)\s*$")


def parse_id(value: Any, what: str = "node ID") -> int:
    """One uint64 ID from a JSON number, a numeric string or a path segment."""
    if isinstance(value, bool):
        raise InputError(f"{what} must be a non-negative integer ID, got {value!r}")
    v: int | None = None
    if isinstance(value, (int, np.integer)):
        v = int(value)
    elif isinstance(value, str):
        s = value.strip()
        if s.isdigit():
            v = int(s)
    elif isinstance(value, (float, np.floating)):
        if math.isfinite(value) and float(value).is_integer() and abs(value) < 2**53:
            v = int(value)
    if v is None or v < 0 or v > MAX_ID:
        raise InputError(f"{what} must be a non-negative integer ID below 2**64, got {value!r}"[:300])
    return v


def parse_ids(values: Any, what: str = "node_ids") -> np.ndarray:
    """A list of IDs (or one ID) -> ``uint64`` array."""
    if isinstance(values, (str, int, float, np.integer)) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, (list, tuple)):
        raise InputError(f"{what} must be a list of integer IDs, got {type(values).__name__}")
    return np.array([parse_id(v, f"each of {what}") for v in values], dtype=np.uint64)


def parse_bool(value: str | None, name: str, default: bool = False) -> bool:
    """``True/False/1/0`` (any case) -> bool; ``None`` -> ``default``."""
    if value is None:
        return default
    s = value.strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise InputError(f"{name} must be true/false/1/0, got {value!r}")


def parse_int(value: str | None, name: str, default: int | None = None) -> int | None:
    """An integer query parameter; ``None`` -> ``default``."""
    if value is None or value.strip() == "":
        return default
    try:
        return int(value.strip())
    except ValueError:
        raise InputError(f"{name} must be an integer, got {value!r}") from None


def parse_timestamp(value: str | None, name: str) -> float | None:
    """Float Unix seconds (or ISO 8601) -> float seconds; ``None`` stays ``None``."""
    if value is None:
        return None
    try:
        return to_ms(value) / 1000.0
    except InputError as e:
        raise InputError(f"{name}: {e.message}") from None


def parse_bounds(value: str | None) -> np.ndarray | None:
    """``xmin-xmax_ymin-ymax_zmin-zmax`` (voxels) -> ``[[xmin,ymin,zmin],[xmax,ymax,zmax]]``."""
    if value is None or value.strip() == "":
        return None
    parts = value.split("_")
    lo: list[int] = []
    hi: list[int] = []
    for part in parts:
        m = _AXIS.match(part)
        if len(parts) != 3 or m is None:
            raise InputError(
                f"bounds must look like xmin-xmax_ymin-ymax_zmin-zmax (voxels), got {value!r}"
            )
        lo.append(math.floor(float(m.group(1))))
        hi.append(math.ceil(float(m.group(2))))
    if any(a > b for a, b in zip(lo, hi)):
        raise InputError(f"bounds must have min <= max on every axis, got {value!r}")
    return np.array([lo, hi], dtype=np.int64)


def parse_json(body: bytes, what: str = "request body") -> Any:
    """A JSON body, whatever the Content-Type said (caveclient often sends none)."""
    if not body or not body.strip():
        raise InputError(f"the {what} must be JSON, but it is empty")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError(f"the {what} is not valid JSON: {e}") from None


def parse_uint64_body(body: bytes) -> np.ndarray:
    """Raw little-endian uint64 array (``roots_binary``); empty body -> empty array."""
    if len(body) % 8:
        raise InputError(
            f"the body must be raw little-endian uint64 IDs (a multiple of 8 bytes), got {len(body)} bytes"
        )
    return np.frombuffer(body, dtype="<u8").astype(np.uint64)


def parse_id_list_text(value: str | None, name: str) -> list[int]:
    """``[1, 2]`` (Python/JSON list text, as caveclient URL-encodes it), ``1,2`` or ``1``."""
    if value is None or not value.strip():
        raise InputError(f"{name} is required, e.g. {name}=[1, 2]")
    s = value.strip()
    try:
        parsed: Any = json.loads(s)
    except ValueError:
        parsed = [p for p in s.strip("[]()").split(",") if p.strip()]
    if not isinstance(parsed, list):
        parsed = [parsed]
    return [parse_id(v, name) for v in parsed]


def point_list(points: Any, what: str) -> list[list[float | int]]:
    """``[[id, x, y, z], ...]`` (nm) with the ID as an int and coordinates as floats."""
    if not isinstance(points, (list, tuple)):
        raise InputError(f"{what} must be a list of [id, x, y, z] points (nm)")
    out: list[list[float | int]] = []
    for p in points:
        if not isinstance(p, (list, tuple)) or len(p) not in (1, 4):
            raise InputError(f"each of {what} must be [id, x, y, z] (nm), got {p!r}"[:300])
        out.append([parse_id(p[0], f"the ID of a point in {what}"), *_coords(p[1:], what)])
    return out


def _coords(values: Iterable[Any], what: str) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, bool):
            raise InputError(f"coordinates in {what} must be numbers, got {v!r}")
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise InputError(f"coordinates in {what} must be numbers, got {v!r}") from None
        if not math.isfinite(f):
            raise InputError(f"coordinates in {what} must be finite, got {v!r}")
        out.append(f)
    return out
