-- Compression options beyond level and image quality, as the proto3 JSON of
-- pdfsmaller.jobs.v1.CompressionOptions without those two fields; '{}' = defaults.
ALTER TABLE jobs ADD COLUMN options jsonb NOT NULL DEFAULT '{}'::jsonb;
