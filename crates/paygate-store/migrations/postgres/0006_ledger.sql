-- The double-entry ledger (paygate-ledger) and its RFC 6962 journal.
--
-- Accounts carry TigerBeetle's four balance counters; only the ledger's apply (in the
-- transaction of the business fact) changes them. Transfers are immutable apart from their
-- journal position, which the one journal integrator assigns later (leaf_index, leaf_hash): seq orders transfers by insert,
-- leaf_index is their place in the Merkle log. The checkpoint signing key is NOT here: it
-- lives in a file beside the data (an editor of these rows must not be able to re-sign).
-- Amounts and balances are integers (minor units), at most i64::MAX.
CREATE TABLE ledger_accounts (
    id              TEXT    NOT NULL PRIMARY KEY,
    currency        TEXT    NOT NULL,
    code            BIGINT NOT NULL,
    flags           BIGINT NOT NULL,
    owner           TEXT    NOT NULL,
    debits_pending  BIGINT  NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    debits_posted   BIGINT  NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_pending BIGINT  NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    credits_posted  BIGINT  NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX ledger_accounts_owner_idx ON ledger_accounts (owner, code);

CREATE TABLE ledger_transfers (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                TEXT    NOT NULL UNIQUE,
    debit_account_id  TEXT    NOT NULL REFERENCES ledger_accounts (id),
    credit_account_id TEXT    NOT NULL REFERENCES ledger_accounts (id),
    amount BIGINT NOT NULL,
    pending_id        TEXT,
    timeout_s         BIGINT NOT NULL,
    currency          TEXT    NOT NULL,
    code              BIGINT NOT NULL,
    kind              TEXT    NOT NULL,
    linked            BIGINT NOT NULL,
    user_data         TEXT    NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    leaf_index        BIGINT UNIQUE,
    leaf_hash         TEXT
);
CREATE INDEX ledger_transfers_user_data_idx ON ledger_transfers (user_data);
CREATE INDEX ledger_transfers_unsequenced_idx ON ledger_transfers (seq) WHERE leaf_index IS NULL;

-- The status of every pending transfer (pending, posted, voided, expired), apart from the
-- transfer row: a posting never updates a transfer row, so it never waits on the integrator
-- (which updates transfer rows only to give them their leaf) and they cannot deadlock.
CREATE TABLE ledger_pending (
    transfer_id TEXT NOT NULL PRIMARY KEY REFERENCES ledger_transfers (id),
    status      TEXT NOT NULL CHECK (status IN ('pending', 'posted', 'voided', 'expired'))
);

-- The compact Merkle tree (size, peaks) after the last integration: one row.
CREATE TABLE ledger_journal_head (
    id    BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL,
    peaks TEXT    NOT NULL
);
INSERT INTO ledger_journal_head (id, size, peaks) VALUES (1, 0, '');

CREATE TABLE ledger_checkpoints (
    size BIGINT NOT NULL PRIMARY KEY,
    root       TEXT    NOT NULL,
    note       TEXT    NOT NULL,
    created_at BIGINT NOT NULL
);

-- The fee snapshot of an order (issue 4 §5) and settle_info.profit_sharing.
ALTER TABLE orders ADD COLUMN fee_rate_ppm BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN fee_fen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN channel_cost_ppm BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN channel_cost_fen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN profit_sharing BIGINT NOT NULL DEFAULT 0 CHECK (profit_sharing IN (0, 1));
