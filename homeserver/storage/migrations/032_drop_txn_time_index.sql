-- Transactions were read by time only to load the recent ones at start-up; retries are now
-- recognised by the primary key when an event is written, so the time index is only a
-- cost on every send.
DROP INDEX IF EXISTS event_transactions_by_time;
