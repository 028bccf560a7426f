-- API tokens for the HTTP APIs (gxami_runtime.auth). A token is shown once when created; only its
-- SHA-256 is kept. `id` is the public part of the token (gxa_<id>_<secret>), so a request is looked
-- up by id and its hash compared in constant time. A revoked token keeps its row (for the audit
-- trail) and frees its name: names are unique among live tokens only.
--
-- No grant to bi_reader: BI tools never see token hashes, names or roles.

CREATE TABLE IF NOT EXISTS api_tokens (
    id           text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{16}$'),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role         text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    hash         bytea NOT NULL CHECK (length(hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

REVOKE ALL ON api_tokens FROM PUBLIC;

COMMENT ON TABLE api_tokens IS 'HTTP API tokens: SHA-256 of each token, never the token itself.';
COMMENT ON COLUMN api_tokens.hash IS 'SHA-256 of the whole token string gxa_<id>_<secret>.';
