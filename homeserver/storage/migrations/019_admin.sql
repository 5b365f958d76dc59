-- Administration: account states an admin sets, and the audit log of every admin look at
-- or change to a user's data (append-only through the API).
ALTER TABLE users ADD COLUMN locked SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN suspended SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN shadow_banned SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN user_type TEXT;

CREATE TABLE admin_audit_log (
    id BIGINT NOT NULL PRIMARY KEY,
    ts BIGINT NOT NULL,
    admin TEXT NOT NULL,
    action TEXT NOT NULL,
    target_user TEXT,
    target_room TEXT,
    ip TEXT,
    details TEXT
);
CREATE INDEX admin_audit_log_by_ts ON admin_audit_log (ts);
CREATE INDEX admin_audit_log_by_target ON admin_audit_log (target_user, ts);

CREATE TABLE blocked_rooms (
    room_id TEXT NOT NULL PRIMARY KEY,
    blocked_by TEXT NOT NULL,
    blocked_ts BIGINT NOT NULL
);
