-- Data protection (issue 7). Sensitive fields are sealed by the store with SM4-GCM under data
-- keys ("pgv1.<key id>.<base64url>" in the same TEXT columns); openids move to their own table
-- and orders keep a token. Rows written before this migration are re-sealed in the background.

-- The data keys and the index key, each wrapped by the master key (never stored here).
CREATE TABLE vault_keys (
    key_id        TEXT    NOT NULL PRIMARY KEY,
    purpose       TEXT    NOT NULL CONSTRAINT vault_keys_purpose_check CHECK (purpose IN ('DATA', 'INDEX')),
    master_key_id TEXT    NOT NULL,
    wrapped       TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    activate_at   BIGINT  NOT NULL,
    retired_at    BIGINT
);

-- One index key per database: two nodes creating the first one at once cannot both win.
CREATE UNIQUE INDEX vault_keys_one_index_key ON vault_keys (purpose) WHERE purpose = 'INDEX';

-- The openid vault: token (a keyed hash of the openid) -> the sealed openid.
CREATE TABLE openid_vault (
    token      TEXT    NOT NULL PRIMARY KEY,
    sealed     TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
);

-- Request nonces seen within the timestamp window, shared by every node of the database.
CREATE TABLE request_nonces (
    mchid      TEXT    NOT NULL,
    nonce      TEXT    NOT NULL,
    expires_at BIGINT  NOT NULL,
    PRIMARY KEY (mchid, nonce)
);

CREATE INDEX request_nonces_expiry_idx ON request_nonces (expires_at);

-- The operator audit trail: append-only, each row chained to the one before by a keyed hash.
CREATE TABLE operator_audit (
    seq       BIGINT  NOT NULL PRIMARY KEY CONSTRAINT operator_audit_seq_check CHECK (seq > 0),
    at        BIGINT  NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    target    TEXT    NOT NULL,
    detail    TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);

-- Platform keys: one generation per kind at a time. Two nodes starting on an empty database
-- both try generation 1; the loser's insert conflicts and it re-reads the winner's key.
ALTER TABLE platform_keys ADD COLUMN generation BIGINT NOT NULL DEFAULT 1;
UPDATE platform_keys SET generation = (
    SELECT COUNT(*) FROM platform_keys p
    WHERE p.kind = platform_keys.kind
      AND (p.created_at < platform_keys.created_at
           OR (p.created_at = platform_keys.created_at AND p.key_id <= platform_keys.key_id))
);
CREATE UNIQUE INDEX platform_keys_kind_generation_key ON platform_keys (kind, generation);
