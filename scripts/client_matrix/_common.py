"""What the Python client scenarios share: the step runner, the results' format, and the few
primitives no library under test offers (canonical JSON, backup encryption with python-olm).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

JsonDict = dict[str, Any]

STEPS = (
    "register",
    "cross_signing",
    "secret_storage",
    "key_backup",
    "encrypted_room",
    "send_both_ways",
    "members_before_encrypting",
    "restore_new_device",
)
STEP_TIMEOUT = 60.0
MEGOLM = "m.megolm.v1.aes-sha2"
BACKUP_ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
CLIENT_PREFIX = "/_matrix/client/v3"

log = logging.getLogger("client_matrix")


class NotAvailable(Exception):
    """The library cannot do this step (the message says why)."""


class StepFailed(Exception):
    """The step failed; the message is the reason."""


class HttpFailure(StepFailed):
    """The server answered a request wrongly; the message records request and response."""

    def __init__(self, method: str, path: str, status: int, body: Any, note: str = "") -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        if len(text) > 500:
            text = text[:500] + "..."
        super().__init__(f"{note + ': ' if note else ''}{method} {path} -> {status} {text}")


def describe_error(error: BaseException) -> str:
    """A one-line reason for an unexpected exception, with the HTTP details when there are."""
    if isinstance(error, StepFailed):
        return str(error)
    status = getattr(error, "http_status", None)  # mautrix's MatrixRequestError
    if status is not None:
        errcode = getattr(error, "errcode", None)
        message = getattr(error, "message", None) or getattr(error, "text", "")
        return f"{type(error).__name__}: HTTP {status} {errcode or ''} {message}".strip()
    return f"{type(error).__name__}: {error}"


StepFn = Callable[[], Awaitable[str | None]]


class Steps:
    """Runs the steps in turn, each under a timeout, and keeps one result string per step.

    A step function returns None ("ok") or a note ("ok: <note>", e.g. when the step had to
    go around the library); it raises NotAvailable ("n/a: ...") or anything else ("FAIL: ...").
    """

    def __init__(self, timeout: float = STEP_TIMEOUT) -> None:
        self.timeout = timeout
        self.results: dict[str, str] = {}

    def ok(self, name: str) -> bool:
        return self.results.get(name, "").startswith("ok")

    async def run(self, name: str, step: StepFn, needs: Iterable[str] = ()) -> bool:
        assert name in STEPS, name
        missing = [n for n in needs if not self.ok(n)]
        if missing:
            self.results[name] = f"FAIL: not run, it needs {', '.join(missing)}"
            return False
        try:
            note = await asyncio.wait_for(step(), self.timeout)
        except NotAvailable as e:
            self.results[name] = f"n/a: {e}"
        except TimeoutError:
            self.results[name] = f"FAIL: timed out after {self.timeout:.0f} s"
        except Exception as e:  # any failure of the library or the server is a result
            log.info("step %s failed", name, exc_info=True)
            self.results[name] = f"FAIL: {describe_error(e)}"
        else:
            self.results[name] = f"ok: {note}" if note else "ok"
        return self.ok(name)

    def ordered(self) -> dict[str, str]:
        return {name: self.results.get(name, "FAIL: not run") for name in STEPS}


def localpart(name: str) -> str:
    return f"{name}-{secrets.token_hex(5)}"


def canonical_json(value: Any) -> str:
    """The spec's canonical JSON (sorted keys, no spaces, UTF-8), for signing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def unsigned_copy(value: JsonDict) -> JsonDict:
    """The object as it is signed: without ``signatures`` and ``unsigned``."""
    return {k: v for k, v in value.items() if k not in ("signatures", "unsigned")}


def password_auth(user_id: str, password: str, session: str | None) -> JsonDict:
    auth: JsonDict = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
    }
    if session:
        auth["session"] = session
    return auth


def uia_session(status: int, body: Any, flow_stage: str) -> str:
    """The UIA session of a 401 that offers ``flow_stage``; StepFailed otherwise."""
    if status != 401 or not isinstance(body, dict) or not isinstance(body.get("session"), str):
        raise StepFailed(f"expected a 401 UIA challenge, got {status} {json.dumps(body)[:300]}")
    stages = [s for flow in body.get("flows") or [] for s in flow.get("stages") or []]
    if flow_stage not in stages:
        raise StepFailed(f"the UIA challenge offers no {flow_stage} stage: {json.dumps(body)}")
    session: str = body["session"]
    return session


def backup_session_data(public_key: str, session: JsonDict) -> JsonDict:
    """A session encrypted to the backup's public key with python-olm's PkEncryption (the
    libolm implementation of m.megolm_backup.v1.curve25519-aes-sha2)."""
    import olm

    message = olm.PkEncryption(public_key).encrypt(json.dumps(session))
    return {
        "ephemeral": message.ephemeral_key,
        "ciphertext": message.ciphertext,
        "mac": message.mac,
    }


def member_check(body: Any, user_ids: Iterable[str]) -> None:
    """The /members answer holds a join event for each user."""
    chunk = body.get("chunk") if isinstance(body, dict) else None
    if not isinstance(chunk, list):
        raise StepFailed(f"/members answered without a chunk: {json.dumps(body)[:300]}")
    joined = {
        e.get("state_key")
        for e in chunk
        if isinstance(e, dict)
        and e.get("type") == "m.room.member"
        and (e.get("content") or {}).get("membership") == "join"
    }
    missing = set(user_ids) - joined
    if missing:
        raise StepFailed(f"/members lacks joined members {sorted(missing)}: {json.dumps(chunk)}")
