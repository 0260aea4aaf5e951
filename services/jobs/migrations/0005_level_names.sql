-- One spelling of a level end to end: its name as libs/compression.py defines it ('medium'), the one the
-- public API and the engine use. Rows written before spelled the CompressionLevel enum's suffix ('MEDIUM'),
-- and 'UNSPECIFIED' when no level was given, which always meant the default level.
UPDATE jobs SET level = CASE WHEN level = 'UNSPECIFIED' THEN 'medium' ELSE lower(level) END
    WHERE level NOT IN ('lossless', 'low', 'medium', 'high', 'maximum');
ALTER TABLE jobs ALTER COLUMN level SET DEFAULT 'medium';
-- The names libs/compression.py defines: a new level needs a migration replacing this constraint
-- (services/jobs/tests/test_repository.py inserts every defined level).
ALTER TABLE jobs ADD CONSTRAINT jobs_level_name
    CHECK (level IN ('lossless', 'low', 'medium', 'high', 'maximum'));
