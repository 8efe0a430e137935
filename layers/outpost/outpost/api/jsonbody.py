"""The request body's JSON reader: json.loads, refusing the numbers JSON cannot carry.

Python's json.loads accepts NaN, Infinity and -Infinity (not JSON, RFC 8259 §6), reads a
number too large for a float (1e400) as infinity, and raises a plain ValueError for an
integer of more than 4,300 digits (the interpreter's int/str conversion limit), which is no
JSONDecodeError: the resolver's validation did not catch it and the catch-all answered 503.
Here each is a JSONDecodeError, so the request is answered 400 invalid_json like any other
body that is not JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def loads_body(body: str) -> Any:
    """The body's JSON value; a JSONDecodeError for anything RFC 8259 JSON cannot carry."""
    try:
        return json.loads(body, parse_constant=_constant, parse_float=_float)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # an int over sys.get_int_max_str_digits(), a refused number
        raise json.JSONDecodeError(str(exc).split(";")[0], body if isinstance(body, str) else "", 0) from None
