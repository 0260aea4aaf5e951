-- Retries back off: a queued job is not leased before not_before (the time it was queued when it
-- never failed). Failures caused by the system's own outages are counted apart from attempts.
ALTER TABLE jobs ADD COLUMN not_before timestamptz NOT NULL DEFAULT now();
ALTER TABLE jobs ADD COLUMN outage_retries integer NOT NULL DEFAULT 0;
-- LeaseJob still walks jobs_queue (created_at, id) and skips jobs not yet due; this one finds the
-- earliest retry time for the long poll and counts the jobs waiting to retry.
CREATE INDEX jobs_queue_not_before ON jobs (not_before) WHERE state = 'QUEUED';
-- The delay before the n-th retry: full jitter over exponential backoff, random(0, min(cap, base * 2^n)).
-- `jitter` pins the random fraction (tests); NULL draws one per call. n is capped so 2^n stays finite.
CREATE FUNCTION jobs_retry_delay(n integer, base float8, cap float8, jitter float8) RETURNS interval
    LANGUAGE sql VOLATILE
    RETURN make_interval(secs => COALESCE(jitter, random()) * LEAST(cap, base * power(2, LEAST(GREATEST(n, 0), 40))));
