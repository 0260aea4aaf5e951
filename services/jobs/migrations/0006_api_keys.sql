-- Tenants' API keys (services/jobs/api_keys.py). A key is `pdfs_<id>_<secret>`: `id` is public (it names the
-- key in logs and the operator API), the secret is kept only as salt + sha256(salt || secret).
CREATE TABLE api_keys (
    id text PRIMARY KEY,
    tenant text NOT NULL CHECK (tenant ~ '^[A-Za-z0-9_-]{1,64}$'),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    scopes text[] NOT NULL CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['upload', 'read', 'delete']),
    salt bytea NOT NULL CHECK (length(salt) = 16),
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    expire_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    -- The key this one replaced (RotateApiKey); kept when that key's row goes.
    rotated_from text REFERENCES api_keys (id) ON DELETE SET NULL
);
-- ListApiKeys pages newest first, over every tenant or one.
CREATE INDEX api_keys_created ON api_keys (created_at DESC, id DESC);
CREATE INDEX api_keys_tenant_created ON api_keys (tenant, created_at DESC, id DESC);
-- A key is rotated once: the second rotation must name the successor (RotateApiKey, API_KEY_ALREADY_ROTATED).
CREATE UNIQUE INDEX api_keys_one_successor ON api_keys (rotated_from) WHERE rotated_from IS NOT NULL;
