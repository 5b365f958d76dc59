-- Whether a redacted event's original content has been deleted from `events.json` yet
-- (after retention.redaction_retention_period).
ALTER TABLE redactions ADD COLUMN pruned SMALLINT NOT NULL DEFAULT 0;
