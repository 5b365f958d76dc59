"""User-interactive authentication: sessions, flows and the stages we offer.

A session belongs to one operation (register, delete devices, ...) so that a
password typed to delete one device cannot be replayed to deactivate the account.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crypto.tokens import mint_opaque_id
from homeserver.errors import Codes, InteractiveAuthRequired, MatrixError, invalid_param
from homeserver.services.auth import Requester

if TYPE_CHECKING:
    from homeserver.server import HomeServer

DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"
REGISTRATION_TOKEN = "m.login.registration_token"
EMAIL_IDENTITY = "m.login.email.identity"
TERMS = "m.login.terms"

_SESSION_TTL_MS = 30 * 60 * 1000
MAX_SESSIONS = 10_000


@dataclass
class UiaSession:
    session_id: str
    operation: str
    user_id: str | None
    created_ms: int
    completed: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)


class StageFailed(Exception):
    def __init__(self, errcode: str, msg: str) -> None:
        super().__init__(msg)
        self.errcode = errcode
        self.msg = msg


StageChecker = Callable[[dict[str, Any], UiaSession], Awaitable[Any]]


class InteractiveAuthService:
    def __init__(self, hs: HomeServer) -> None:
        self.clock = hs.clock
        self.hs = hs
        self._sessions: dict[str, UiaSession] = {}
        self._checkers: dict[str, StageChecker] = {
            DUMMY: self._check_dummy,
            PASSWORD: self._check_password,
            REGISTRATION_TOKEN: self._check_registration_token,
            EMAIL_IDENTITY: self._check_email,
            TERMS: self._check_terms,
        }

    def _expire_sessions(self) -> None:
        cutoff = self.clock.time_msec() - _SESSION_TTL_MS
        for session_id in [s for s, v in self._sessions.items() if v.created_ms < cutoff]:
            del self._sessions[session_id]

    def _challenge(
        self, session: UiaSession, flows: list[list[str]], error: StageFailed | None = None
    ) -> InteractiveAuthRequired:
        body: dict[str, Any] = {
            "flows": [{"stages": stages} for stages in flows],
            "params": self.params(flows),
            "session": session.session_id,
        }
        if session.completed:
            body["completed"] = list(session.completed)
        if error is not None:
            body["errcode"] = error.errcode
            body["error"] = error.msg
        return InteractiveAuthRequired(body)

    async def authenticate(
        self,
        body: dict[str, Any],
        flows: list[list[str]],
        operation: str,
        requester: Requester | None = None,
    ) -> dict[str, Any]:
        """Return the stage results once a flow is complete; otherwise raise the 401 challenge."""
        self._expire_sessions()
        auth = body.get("auth")
        if auth is not None and not isinstance(auth, dict):
            raise MatrixError(400, Codes.BAD_JSON, "'auth' must be an object")
        session_id = auth.get("session") if auth else None
        if session_id is not None and not isinstance(session_id, str):
            raise MatrixError(400, Codes.BAD_JSON, "'auth.session' must be a string")
        user_id = requester.user_id if requester else None
        if session_id is None:
            session = UiaSession(mint_opaque_id(), operation, user_id, self.clock.time_msec())
            self._sessions[session.session_id] = session
            while len(self._sessions) > MAX_SESSIONS:  # the oldest go first
                del self._sessions[next(iter(self._sessions))]
        else:
            found = self._sessions.get(session_id)
            if found is None:
                raise MatrixError(400, Codes.UNKNOWN, "Unknown or expired auth session")
            if found.operation != operation or found.user_id != user_id:
                raise MatrixError(
                    403, Codes.FORBIDDEN, "This auth session was started for another operation"
                )
            session = found

        if not auth or "type" not in auth:
            raise self._challenge(session, flows)
        stage = auth["type"]
        allowed = {s for stages in flows for s in stages}
        if not isinstance(stage, str) or stage not in allowed:
            raise self._challenge(
                session, flows, StageFailed(Codes.UNRECOGNIZED, f"Unsupported auth type {stage!r}")
            )
        try:
            session.results[stage] = await self._checkers[stage](auth, session)
        except StageFailed as failed:
            raise self._challenge(session, flows, failed) from None
        if stage not in session.completed:
            session.completed.append(stage)
        if any(all(s in session.completed for s in stages) for stages in flows):
            self._sessions.pop(session.session_id, None)
            return session.results
        raise self._challenge(session, flows)

    def params(self, flows: list[list[str]]) -> dict[str, Any]:
        """What clients need to complete the stages: the policies to accept, for terms."""
        if any(TERMS in stages for stages in flows):
            return {TERMS: self.hs.consent.terms_params()}
        return {}

    async def _check_dummy(self, auth: dict[str, Any], session: UiaSession) -> bool:
        return True

    async def _check_terms(self, auth: dict[str, Any], session: UiaSession) -> str:
        """The client shows the policies and sends this once the user accepted them all."""
        return self.hs.config.consent.version

    async def _check_password(self, auth: dict[str, Any], session: UiaSession) -> str:
        if session.user_id is None:
            raise StageFailed(Codes.FORBIDDEN, "Password authentication needs a logged-in user")
        password = auth.get("password")
        if not isinstance(password, str):
            raise invalid_param("'auth.password' must be a string")
        claimed = self.hs.accounts.user_id_from_identifier(auth)
        if claimed is not None and claimed != session.user_id:
            raise StageFailed(Codes.FORBIDDEN, "You can only authenticate as yourself")
        self.hs.ratelimiter.check("login_failed_attempts", session.user_id, consume=False)
        if not await self.hs.accounts.check_password(session.user_id, password):
            self.hs.ratelimiter.check("login_failed_attempts", session.user_id)
            raise StageFailed(Codes.FORBIDDEN, "Invalid password")
        return session.user_id

    async def _check_registration_token(self, auth: dict[str, Any], session: UiaSession) -> str:
        token = auth.get("token")
        if not isinstance(token, str):
            raise invalid_param("'auth.token' must be a string")
        if not await self.hs.accounts.registration_token_is_valid(token):
            raise StageFailed(Codes.FORBIDDEN, "Invalid registration token")
        return token

    async def _check_email(self, auth: dict[str, Any], session: UiaSession) -> Any:
        """A validated e-mail session of the kind this operation needs."""
        purpose = "register" if session.operation == "register" else "password"
        try:
            return await self.hs.threepids.validated(auth.get("threepid_creds"), purpose)
        except MatrixError as e:
            raise StageFailed(e.errcode, e.msg) from None
