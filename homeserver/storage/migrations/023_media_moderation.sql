-- Media moderation: quarantined media is never served; protected media cannot be
-- quarantined.
ALTER TABLE media ADD COLUMN quarantined_by TEXT;
ALTER TABLE media ADD COLUMN safe_from_quarantine SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE remote_media ADD COLUMN quarantined_by TEXT;
