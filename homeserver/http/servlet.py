"""Parsing what a client sent: JSON bodies, typed fields and query parameters.

Every helper raises a ``MatrixError`` naming the offending field, so servlets stay
a few lines long and no malformed input reaches a service.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar, overload

import msgspec

from homeserver.errors import Codes, MatrixError, bad_json, invalid_param, missing_param
from homeserver.http.server import MatrixRequest
from homeserver.streams import parse_position

T = TypeVar("T")

CLIENT_PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")


def client_paths(path: str, versions: tuple[str, ...] = CLIENT_PREFIXES) -> list[str]:
    """The same endpoint under each client API prefix it is served on."""
    return [prefix + path for prefix in versions]


def client_v1_paths(path: str) -> list[str]:
    return ["/_matrix/client/v1" + path]


def parse_json_value(raw: bytes) -> Any:
    """Strict JSON: no NaN or Infinity, valid UTF-8, integers that fit in 64 bits."""
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise MatrixError(400, Codes.NOT_JSON, "Content not JSON.") from None


def parse_json_object(request: MatrixRequest, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object. ``allow_empty`` treats no body as ``{}``."""
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        if allow_empty:
            return {}
        raise MatrixError(400, Codes.NOT_JSON, "Content not JSON.")
    body = parse_json_value(raw)
    if not isinstance(body, dict):
        raise bad_json("Content must be a JSON object.")
    return body


def _type_name(expected: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        dict: "an object",
        list: "an array",
        float: "a number",
    }
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(names.get(t, t.__name__) for t in types)


def _is_instance(value: Any, expected: type | tuple[type, ...]) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    # JSON true is not an integer here, whatever Python thinks.
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def require(body: dict[str, Any], key: str, expected: type | tuple[type, ...]) -> Any:
    if key not in body or body[key] is None:
        raise missing_param(key)
    value = body[key]
    if not _is_instance(value, expected):
        raise MatrixError(400, Codes.BAD_JSON, f"Parameter {key!r} must be {_type_name(expected)}")
    return value


def optional(
    body: dict[str, Any], key: str, expected: type | tuple[type, ...], default: Any = None
) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if not _is_instance(value, expected):
        raise MatrixError(400, Codes.BAD_JSON, f"Parameter {key!r} must be {_type_name(expected)}")
    return value


def query_string(
    request: MatrixRequest, name: str, default: str | None = None, allowed: tuple[str, ...] = ()
) -> str | None:
    value = request.query_arg(name)
    if value is None:
        return default
    if allowed and value not in allowed:
        raise invalid_param(f"Query parameter {name!r} must be one of {', '.join(allowed)}")
    return value


def query_required(request: MatrixRequest, name: str) -> str:
    value = request.query_arg(name)
    if value is None:
        raise missing_param(name)
    return value


def query_int(
    request: MatrixRequest, name: str, default: int, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = request.query_arg(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_param(f"Query parameter {name!r} must be an integer") from None
    if value < minimum:
        raise invalid_param(f"Query parameter {name!r} must be at least {minimum}")
    if maximum is not None:
        value = min(value, maximum)
    elif value > _BIGINT_MAX:
        # Would overflow the database's 64-bit integers: a 500, not a 400, if let through.
        raise invalid_param(f"Query parameter {name!r} is too large")
    return value


@overload
def query_ts(request: MatrixRequest, name: str, required: Literal[True]) -> int: ...
@overload
def query_ts(request: MatrixRequest, name: str, required: bool = False) -> int | None: ...
def query_ts(request: MatrixRequest, name: str, required: bool = False) -> int | None:
    """A timestamp (milliseconds) query parameter; a bad one is a 400, never ignored."""
    raw = request.query_arg(name)
    if raw is None:
        if required:
            raise missing_param(name)
        return None
    value = parse_position(raw)
    if value is None:
        raise invalid_param(f"{name} must be a non-negative integer (milliseconds)")
    return value


def query_bool(request: MatrixRequest, name: str, default: bool) -> bool:
    raw = request.query_arg(name)
    if raw is None:
        return default
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise invalid_param(f"Query parameter {name!r} must be true or false")


def query_json_object(request: MatrixRequest, name: str) -> dict[str, Any] | None:
    """A query parameter holding a JSON object (e.g. an inline `filter`), or None if absent."""
    raw = query_string(request, name)
    if raw is None:
        return None
    value = parse_json_value(raw.encode())
    if not isinstance(value, dict):
        raise bad_json(f"{name} must be a JSON object")
    return value


_BIGINT_MAX = 2**63 - 1
