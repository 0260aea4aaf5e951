-- GetQueueStats reads indexes, never the whole table (services/jobs/queue_stats.py; its tests check the plans).
-- Depth by level: the queued and running jobs alone, with what the counts need (index-only scans).
CREATE INDEX jobs_active_level ON jobs (level, state, not_before) WHERE state IN ('QUEUED', 'RUNNING');
-- Throughput windows: a finished job's updated_at is when it finished (nothing updates a SUCCEEDED or
-- FAILED row; expiry makes it EXPIRED, which leaves this index), so the last minutes are a range scan.
CREATE INDEX jobs_finished ON jobs (updated_at, state) WHERE state IN ('SUCCEEDED', 'FAILED');
