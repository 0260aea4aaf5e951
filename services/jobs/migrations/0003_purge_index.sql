-- EXPIRED jobs whose objects are gone are purged after a while (the sweeper's last step).
CREATE INDEX jobs_purgeable ON jobs (expire_at) WHERE state = 'EXPIRED' AND objects_deleted;
