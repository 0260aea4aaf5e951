-- OperatorService (services/jobs/operator_servicer.py): the workers known from their lease calls and
-- heartbeats, the queue's pause switch, and the indexes of the cross-tenant operator queries.

-- One row per worker id, upserted by every LeaseJob and RenewLease (services/jobs/workers.py).
CREATE TABLE workers (
    id             text PRIMARY KEY,
    host           text             NOT NULL DEFAULT '',
    -- The worker process's start (LeaseJobRequest.worker_start_time); counters count since then.
    start_time     timestamptz      NOT NULL DEFAULT now(),
    last_seen      timestamptz      NOT NULL DEFAULT now(),
    jobs_succeeded bigint           NOT NULL DEFAULT 0,
    jobs_failed    bigint           NOT NULL DEFAULT 0,
    busy_seconds   double precision NOT NULL DEFAULT 0,
    -- DrainWorker: LeaseJob gives this worker no more jobs.
    draining       boolean          NOT NULL DEFAULT false
);
-- Lost workers: listing the recent ones, forgetting the old ones.
CREATE INDEX workers_last_seen ON workers (last_seen);

-- PauseQueue: exactly one row (the key can only be true), read by every lease in the same statement.
CREATE TABLE queue_control (
    id        boolean PRIMARY KEY DEFAULT true CHECK (id),
    paused    boolean     NOT NULL DEFAULT false,
    reason    text        NOT NULL DEFAULT '',
    paused_by text        NOT NULL DEFAULT '',
    paused_at timestamptz
);
INSERT INTO queue_control DEFAULT VALUES;

-- When the current (or last) lease began: the lease start of running jobs, a worker's busy time.
ALTER TABLE jobs ADD COLUMN leased_at timestamptz;

-- Operator ListJobs (and the bulk selections) walk these newest first: every tenant, one state, one worker.
-- A tenant's filter uses jobs_tenant_created (0001), ids the primary key.
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_state_created ON jobs (state, created_at DESC, id DESC);
CREATE INDEX jobs_worker_created ON jobs (worker_id, created_at DESC, id DESC) WHERE worker_id <> '';
-- A worker's jobs in hand (ListWorkers, drained or draining).
CREATE INDEX jobs_running_worker ON jobs (worker_id) WHERE state = 'RUNNING';
