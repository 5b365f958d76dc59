-- Long admin jobs (room deletion and purge, ...): persisted so that a restart resumes
-- them, with their progress and result for the status endpoints.
CREATE TABLE scheduled_tasks (
    id TEXT NOT NULL PRIMARY KEY,
    action TEXT NOT NULL,
    resource_id TEXT,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created_ts BIGINT NOT NULL,
    updated_ts BIGINT NOT NULL
);
CREATE INDEX scheduled_tasks_by_resource ON scheduled_tasks (resource_id);
