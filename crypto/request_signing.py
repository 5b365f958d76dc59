"""Federation request authentication: the ``Authorization: X-Matrix ...`` header.

The signed object is ``{method, uri, origin, destination[, content]}`` in canonical JSON;
the header carries the origin's signature over it. Pure functions: the caller supplies the
keys and looks up the verify key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from signedjson.types import SigningKey

from crypto.canonical import sign, verify

JsonDict = dict[str, Any]

_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(?:,|$)')


class InvalidAuthHeader(ValueError):
    """The Authorization header is not a well-formed X-Matrix header."""


@dataclass(frozen=True)
class XMatrixAuth:
    origin: str
    destination: str | None
    key_id: str
    signature: str


def request_object(
    method: str, uri: str, origin: str, destination: str, content: Any = None
) -> JsonDict:
    """What is signed: the request's method, path with query, the two servers, the body."""
    obj: JsonDict = {"method": method, "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        obj["content"] = content
    return obj


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sign_request(
    method: str, uri: str, origin: str, destination: str, content: Any, key: SigningKey
) -> str:
    """The Authorization header value for one outbound request."""
    signed = sign(request_object(method, uri, origin, destination, content), origin, key)
    key_id = f"{key.alg}:{key.version}"
    signature = signed["signatures"][origin][key_id]
    return (
        f"X-Matrix origin={_quote(origin)},destination={_quote(destination)},"
        f"key={_quote(key_id)},sig={_quote(signature)}"
    )


def parse_x_matrix(header: str) -> XMatrixAuth:
    """Parse ``X-Matrix origin=...,destination=...,key=...,sig=...`` (values quoted or not,
    in any order; the scheme is case-insensitive)."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "x-matrix" or not rest:
        raise InvalidAuthHeader("not an X-Matrix authorization header")
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _PARAM_RE.match(rest, position)
        if match is None or match.end() == position:
            raise InvalidAuthHeader("malformed X-Matrix parameters")
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name] = value
        position = match.end()
    try:
        return XMatrixAuth(
            origin=params["origin"],
            destination=params.get("destination"),
            key_id=params["key"],
            signature=params["sig"],
        )
    except KeyError as e:
        raise InvalidAuthHeader(f"X-Matrix header lacks {e.args[0]}") from None


def verify_request(
    auth: XMatrixAuth,
    method: str,
    uri: str,
    destination: str,
    content: Any,
    verify_key_b64: str,
) -> bool:
    """True if ``auth`` is the origin's valid signature over this request to us."""
    obj = request_object(method, uri, auth.origin, destination, content)
    obj["signatures"] = {auth.origin: {auth.key_id: auth.signature}}
    return verify(obj, auth.origin, auth.key_id, verify_key_b64)
