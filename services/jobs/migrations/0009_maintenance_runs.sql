-- The runs of the scheduled `pdfsmaller-ops` commands (vacuum, sweep-orphans, backup, backup-files), one row
-- each, written by the command as it ends (ops/run_record.py) and exported by the jobs service as gauges
-- (services/jobs/maintenance_metrics.py): what the alerts "has not succeeded for too long" read, with
-- no Pushgateway and no kube-state-metrics. Bounded: each run keeps its task's newest rows and its
-- newest success, and deletes the rest.
CREATE TABLE maintenance_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The command, or its variant: vacuum, sweep-orphans, sweep-orphans-dry-run, backup, backup-logical, ...
    task        text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    ok          boolean     NOT NULL,
    -- The step that failed and its message (empty when ok).
    failed_step text        NOT NULL DEFAULT '',
    error       text        NOT NULL DEFAULT '',
    -- The results of the command's --json document, as printed.
    results     jsonb       NOT NULL DEFAULT '{}',
    -- Their numeric figures (name -> number, a bounded set): the gauge pdfsmaller_maintenance_last_run_items.
    items       jsonb       NOT NULL DEFAULT '{}'
);
-- The newest run of each task, and the newest success (the scrape's query, and each run's pruning).
CREATE INDEX maintenance_runs_task_finished ON maintenance_runs (task, finished_at DESC, id DESC);
CREATE INDEX maintenance_runs_task_succeeded ON maintenance_runs (task, finished_at DESC, id DESC) WHERE ok;
