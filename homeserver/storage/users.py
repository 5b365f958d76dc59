"""SQL for accounts and registration tokens."""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.storage.engine import Database, Txn


@dataclass(frozen=True)
class UserRecord:
    user_id: str
    password_hash: str | None
    created_ts: int
    is_admin: bool
    deactivated: bool


class UserExistsError(Exception):
    pass


@dataclass(frozen=True)
class RegistrationToken:
    token: str
    uses_allowed: int | None
    pending: int
    completed: int
    expiry_time: int | None


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_user(
        self, user_id: str, password_hash: str | None, now_ms: int, is_admin: bool = False
    ) -> None:
        def txn_fn(txn: Txn) -> None:
            # Compare case-insensitively: @Alice and @alice must not both exist.
            if txn.select_one("SELECT 1 FROM users WHERE lower(user_id) = lower(?)", (user_id,)):
                raise UserExistsError(user_id)
            txn.execute(
                "INSERT INTO users (user_id, password_hash, created_ts, is_admin) "
                "VALUES (?, ?, ?, ?)",
                (user_id, password_hash, now_ms, int(is_admin)),
            )

        await self.db.run("create_user", txn_fn)

    async def get_user(self, user_id: str) -> UserRecord | None:
        def txn_fn(txn: Txn) -> UserRecord | None:
            row = txn.select_one(
                "SELECT user_id, password_hash, created_ts, is_admin, deactivated FROM users "
                "WHERE user_id = ?",
                (user_id,),
            )
            if row is None:
                return None
            return UserRecord(row[0], row[1], row[2], bool(row[3]), bool(row[4]))

        return await self.db.run("get_user", txn_fn)

    async def find_user_case_insensitive(self, user_id: str) -> list[str]:
        rows = await self.db.run(
            "find_user_case_insensitive",
            lambda txn: txn.select(
                "SELECT user_id FROM users WHERE lower(user_id) = lower(?)", (user_id,)
            ),
        )
        return [r[0] for r in rows]

    async def set_password_hash(self, user_id: str, password_hash: str | None) -> None:
        await self.db.run(
            "set_password_hash",
            lambda txn: txn.execute(
                "UPDATE users SET password_hash = ? WHERE user_id = ?", (password_hash, user_id)
            ),
        )

    async def mark_deactivated(self, user_id: str, erased: bool) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute(
                "UPDATE users SET deactivated = 1, password_hash = NULL, "
                "erased = CASE WHEN ? = 1 THEN 1 ELSE erased END WHERE user_id = ?",
                (int(erased), user_id),
            )

        await self.db.run("mark_deactivated", txn_fn)

    async def set_admin(self, user_id: str, is_admin: bool) -> None:
        await self.db.run(
            "set_admin",
            lambda txn: txn.execute(
                "UPDATE users SET is_admin = ? WHERE user_id = ?", (int(is_admin), user_id)
            ),
        )

    # Consent to the privacy policy and terms

    async def get_consent_version(self, user_id: str) -> str | None:
        row = await self.db.run(
            "get_consent_version",
            lambda txn: txn.select_one(
                "SELECT consent_version FROM users WHERE user_id = ?", (user_id,)
            ),
        )
        return str(row[0]) if row and row[0] is not None else None

    async def set_consent(self, user_id: str, version: str, now_ms: int) -> None:
        await self.db.run(
            "set_consent",
            lambda txn: txn.execute(
                "UPDATE users SET consent_version = ?, consent_ts = ? WHERE user_id = ?",
                (version, now_ms, user_id),
            ),
        )

    async def users_to_notify_of_consent(self, version: str, except_user: str) -> list[str]:
        """Active users who have not accepted ``version`` and were not told of it yet
        (when none has been told: every such user)."""
        rows = await self.db.run(
            "users_to_notify_of_consent",
            lambda txn: txn.select(
                "SELECT user_id FROM users WHERE deactivated = 0 AND user_id <> ? "
                "AND (consent_version IS NULL OR consent_version <> ?) "
                "AND NOT EXISTS (SELECT 1 FROM consent_notices WHERE version = ?)",
                (except_user, version, version),
            ),
        )
        return [r[0] for r in rows]

    async def mark_consent_notice_sent(self, version: str, now_ms: int) -> None:
        await self.db.run(
            "mark_consent_notice_sent",
            lambda txn: txn.execute(
                "INSERT INTO consent_notices (version, sent_ts) VALUES (?, ?) "
                "ON CONFLICT (version) DO NOTHING",
                (version, now_ms),
            ),
        )

    # External (SSO) identities

    async def get_external_ids(self, user_id: str) -> list[tuple[str, str]]:
        rows = await self.db.run(
            "get_external_ids",
            lambda txn: txn.select(
                "SELECT auth_provider, external_id FROM user_external_ids WHERE user_id = ? "
                "ORDER BY auth_provider, external_id",
                (user_id,),
            ),
        )
        return [(r[0], r[1]) for r in rows]

    async def external_id_owner(self, auth_provider: str, external_id: str) -> str | None:
        row = await self.db.run(
            "external_id_owner",
            lambda txn: txn.select_one(
                "SELECT user_id FROM user_external_ids WHERE auth_provider = ? AND external_id = ?",
                (auth_provider, external_id),
            ),
        )
        return row[0] if row else None

    async def replace_external_ids(self, user_id: str, ids: list[tuple[str, str]]) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute("DELETE FROM user_external_ids WHERE user_id = ?", (user_id,))
            txn.execute_many(
                "INSERT INTO user_external_ids (auth_provider, external_id, user_id) "
                "VALUES (?, ?, ?)",
                [(provider, external_id, user_id) for provider, external_id in ids],
            )

        await self.db.run("replace_external_ids", txn_fn)

    # Registration tokens

    async def create_registration_token(self, token: RegistrationToken) -> bool:
        def txn_fn(txn: Txn) -> bool:
            if txn.select_one("SELECT 1 FROM registration_tokens WHERE token = ?", (token.token,)):
                return False
            txn.execute(
                "INSERT INTO registration_tokens (token, uses_allowed, pending, completed, "
                "expiry_time) VALUES (?, ?, 0, 0, ?)",
                (token.token, token.uses_allowed, token.expiry_time),
            )
            return True

        return await self.db.run("create_registration_token", txn_fn)

    async def get_registration_tokens(self, token: str | None = None) -> list[RegistrationToken]:
        sql = "SELECT token, uses_allowed, pending, completed, expiry_time FROM registration_tokens"
        args: tuple[str, ...] = ()
        if token is not None:
            sql += " WHERE token = ?"
            args = (token,)
        rows = await self.db.run(
            "get_registration_tokens", lambda txn: txn.select(sql + " ORDER BY token", args)
        )
        return [RegistrationToken(*r) for r in rows]

    async def update_registration_token(self, token: str, changes: dict[str, int | None]) -> bool:
        """Set uses_allowed and/or expiry_time (None lifts the limit); False if no such token."""
        columns = [c for c in ("uses_allowed", "expiry_time") if c in changes]

        def txn_fn(txn: Txn) -> bool:
            if not txn.select_one("SELECT 1 FROM registration_tokens WHERE token = ?", (token,)):
                return False
            for column in columns:
                txn.execute(
                    f"UPDATE registration_tokens SET {column} = ? WHERE token = ?",
                    (changes[column], token),
                )
            return True

        return await self.db.run("update_registration_token", txn_fn)

    async def delete_registration_token(self, token: str) -> bool:
        def txn_fn(txn: Txn) -> bool:
            txn.execute("DELETE FROM registration_tokens WHERE token = ?", (token,))
            return txn.rowcount > 0

        return await self.db.run("delete_registration_token", txn_fn)

    async def use_registration_token(self, token: str, now_ms: int) -> bool:
        """Count one completed registration against ``token``, if it is still valid."""

        def txn_fn(txn: Txn) -> bool:
            txn.execute(
                "UPDATE registration_tokens SET completed = completed + 1 WHERE token = ? "
                "AND (uses_allowed IS NULL OR completed < uses_allowed) "
                "AND (expiry_time IS NULL OR expiry_time > ?)",
                (token, now_ms),
            )
            return txn.rowcount == 1

        return await self.db.run("use_registration_token", txn_fn)

    # OpenID tokens

    async def add_openid_token(self, token_hash: str, user_id: str, expires_ts: int) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute(
                "DELETE FROM openid_tokens WHERE expires_ts < ?", (expires_ts - 86_400_000,)
            )
            txn.execute(
                "INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES (?, ?, ?)",
                (token_hash, user_id, expires_ts),
            )

        await self.db.run("add_openid_token", txn_fn)

    async def get_openid_user(self, token_hash: str, now_ms: int) -> str | None:
        row = await self.db.run(
            "get_openid_user",
            lambda txn: txn.select_one(
                "SELECT user_id FROM openid_tokens WHERE token_hash = ? AND expires_ts > ?",
                (token_hash, now_ms),
            ),
        )
        return str(row[0]) if row else None

    # Login tokens

    async def add_login_token(self, token_hash: str, user_id: str, expires_ts: int) -> None:
        await self.db.run(
            "add_login_token",
            lambda txn: txn.execute(
                "INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES (?, ?, ?)",
                (token_hash, user_id, expires_ts),
            ),
        )

    async def take_login_token(self, token_hash: str, now_ms: int) -> str | None:
        """The token's user, if it is valid; it is gone either way (single use)."""

        def txn_fn(txn: Txn) -> str | None:
            row = txn.select_one(
                "SELECT user_id, expires_ts FROM login_tokens WHERE token_hash = ?", (token_hash,)
            )
            txn.execute("DELETE FROM login_tokens WHERE token_hash = ? OR expires_ts < ?",
                        (token_hash, now_ms))  # fmt: skip
            if row is None or int(row[1]) < now_ms:
                return None
            return str(row[0])

        return await self.db.run("take_login_token", txn_fn)
