"""Building blocks of the config models: a frozen strict base, durations and sizes.

People write `250ms`, `15m`, `30d`, `10MiB`; the models hold seconds (float)
and bytes (int), parsed once at load. A bare number is seconds or bytes.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*([A-Za-z]+)?\s*$")
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}
_DURATION_HINT = "expected a duration such as 250ms, 15s, 5m, 30d"
_SIZE_HINT = "expected a size such as 4096, 64KiB, 10MiB"


class Frozen(BaseModel):
    """Immutable, strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


def parse_duration(value: Any) -> float:
    """Seconds from `250ms`, `1.5s`, `5m`, `2h`, `30d` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{_DURATION_HINT} (got {value!r})")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{_DURATION_HINT} (got {value!r})")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{_DURATION_HINT}, finite and not negative (got {value!r})")
    return seconds


def parse_size(value: Any) -> int:
    """Bytes from `4096`, `64KiB`, `10MB` (unit letters in any case)."""
    if isinstance(value, bool):
        raise ValueError(f"{_SIZE_HINT} (got {value!r})")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        unit = (match.group(2) or "b").lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(f"{_SIZE_HINT} (got {value!r})")
        size = int(match.group(1)) * _SIZE_UNITS[unit]
    if size < 0:
        raise ValueError(f"{_SIZE_HINT}, not negative (got {value!r})")
    return size


Duration = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]
