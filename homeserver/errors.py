"""The one exception type that carries a Matrix error; the HTTP layer turns it into a response."""

from __future__ import annotations

from typing import Any


class Codes:
    UNRECOGNIZED = "M_UNRECOGNIZED"
    UNKNOWN = "M_UNKNOWN"
    NOT_JSON = "M_NOT_JSON"
    BAD_JSON = "M_BAD_JSON"
    MISSING_PARAM = "M_MISSING_PARAM"
    INVALID_PARAM = "M_INVALID_PARAM"
    TOO_LARGE = "M_TOO_LARGE"
    MISSING_TOKEN = "M_MISSING_TOKEN"
    UNKNOWN_TOKEN = "M_UNKNOWN_TOKEN"
    FORBIDDEN = "M_FORBIDDEN"
    NOT_FOUND = "M_NOT_FOUND"
    LIMIT_EXCEEDED = "M_LIMIT_EXCEEDED"
    USER_IN_USE = "M_USER_IN_USE"
    INVALID_USERNAME = "M_INVALID_USERNAME"
    USER_DEACTIVATED = "M_USER_DEACTIVATED"
    WEAK_PASSWORD = "M_WEAK_PASSWORD"
    GUEST_ACCESS_FORBIDDEN = "M_GUEST_ACCESS_FORBIDDEN"
    EXCLUSIVE = "M_EXCLUSIVE"
    KEY_TOO_LARGE = "M_KEY_TOO_LARGE"
    PROFILE_TOO_LARGE = "M_PROFILE_TOO_LARGE"
    UNAUTHORIZED = "M_UNAUTHORIZED"
    INCOMPATIBLE_ROOM_VERSION = "M_INCOMPATIBLE_ROOM_VERSION"
    UNSUPPORTED_ROOM_VERSION = "M_UNSUPPORTED_ROOM_VERSION"


class MatrixError(Exception):
    """An error the client is told about: HTTP status, errcode, message, extra fields."""

    def __init__(self, code: int, errcode: str, msg: str, **extra: Any) -> None:
        super().__init__(f"{code} {errcode}: {msg}")
        self.code = code
        self.errcode = errcode
        self.msg = msg
        self.extra = extra
        self.headers: dict[str, str] = {}

    def to_json(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "error": self.msg, **self.extra}


class InteractiveAuthRequired(MatrixError):
    """A 401 whose body is the user-interactive auth state rather than a plain error."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(401, body.get("errcode", ""), body.get("error", ""))
        self.body = body

    def to_json(self) -> dict[str, Any]:
        return self.body


def forbidden(msg: str) -> MatrixError:
    return MatrixError(403, Codes.FORBIDDEN, msg)


def not_found(msg: str) -> MatrixError:
    return MatrixError(404, Codes.NOT_FOUND, msg)


def bad_json(msg: str) -> MatrixError:
    return MatrixError(400, Codes.BAD_JSON, msg)


def missing_param(name: str) -> MatrixError:
    return MatrixError(400, Codes.MISSING_PARAM, f"Missing required parameter: {name}")


def invalid_param(msg: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, msg)


def limit_exceeded(retry_after_ms: int) -> MatrixError:
    error = MatrixError(
        429, Codes.LIMIT_EXCEEDED, "Too many requests", retry_after_ms=retry_after_ms
    )
    error.headers["Retry-After"] = str(max(1, (retry_after_ms + 999) // 1000))
    return error
