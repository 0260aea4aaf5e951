-- Jobs and the work queue live in one table, so job state and queue can never disagree.
CREATE TABLE jobs (
    id                uuid PRIMARY KEY,
    tenant            text        NOT NULL,
    -- Client-chosen idempotency key; '' when none was given.
    request_id        text        NOT NULL DEFAULT '',
    state             text        NOT NULL
        CHECK (state IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED', 'EXPIRED')),
    filename          text        NOT NULL DEFAULT '',
    -- CompressionLevel name without its prefix, e.g. 'MEDIUM'.
    level             text        NOT NULL DEFAULT 'UNSPECIFIED',
    image_quality     smallint    NOT NULL DEFAULT 0 CHECK (image_quality BETWEEN 0 AND 100),
    input_key         text        NOT NULL,
    input_size_bytes  bigint      NOT NULL DEFAULT 0,
    input_sha256      text        NOT NULL DEFAULT '',
    output_key        text        NOT NULL DEFAULT '',
    output_size_bytes bigint      NOT NULL DEFAULT 0,
    output_sha256     text        NOT NULL DEFAULT '',
    error_reason      text        NOT NULL DEFAULT '',
    error_message     text        NOT NULL DEFAULT '',
    progress_percent  smallint    NOT NULL DEFAULT 0 CHECK (progress_percent BETWEEN 0 AND 100),
    -- Number of times the job was leased.
    attempts          integer     NOT NULL DEFAULT 0,
    lease_token       uuid,
    lease_expires_at  timestamptz,
    worker_id         text        NOT NULL DEFAULT '',
    report            jsonb,
    traceparent       text        NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    expire_at         timestamptz NOT NULL,
    -- Set once the sweeper deleted an EXPIRED job's objects (retried until it could).
    objects_deleted   boolean     NOT NULL DEFAULT false
);

CREATE UNIQUE INDEX jobs_tenant_request_id ON jobs (tenant, request_id) WHERE request_id <> '';
-- Queue order for LeaseJob.
CREATE INDEX jobs_queue ON jobs (created_at, id) WHERE state = 'QUEUED';
-- Lease expiry scan.
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE state = 'RUNNING';
-- ListJobs keyset pagination, newest first.
CREATE INDEX jobs_tenant_created ON jobs (tenant, created_at DESC, id DESC);
-- Retention sweep.
CREATE INDEX jobs_expire ON jobs (expire_at) WHERE state <> 'EXPIRED';
CREATE INDEX jobs_objects_pending ON jobs (expire_at) WHERE state = 'EXPIRED' AND NOT objects_deleted;
