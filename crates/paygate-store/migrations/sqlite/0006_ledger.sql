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
    code            INTEGER NOT NULL,
    flags           INTEGER NOT NULL,
    owner           TEXT    NOT NULL,
    debits_pending  INTEGER NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    debits_posted   INTEGER NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_pending INTEGER NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    credits_posted  INTEGER NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX ledger_accounts_owner_idx ON ledger_accounts (owner, code);

CREATE TABLE ledger_transfers (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT    NOT NULL UNIQUE,
    debit_account_id  TEXT    NOT NULL REFERENCES ledger_accounts (id),
    credit_account_id TEXT    NOT NULL REFERENCES ledger_accounts (id),
    amount            INTEGER NOT NULL,
    pending_id        TEXT,
    timeout_s         INTEGER NOT NULL,
    currency          TEXT    NOT NULL,
    code              INTEGER NOT NULL,
    kind              TEXT    NOT NULL,
    linked            INTEGER NOT NULL,
    user_data         TEXT    NOT NULL,
    timestamp_ms      INTEGER NOT NULL,
    leaf_index        INTEGER UNIQUE,
    leaf_hash         TEXT
) STRICT;
CREATE INDEX ledger_transfers_user_data_idx ON ledger_transfers (user_data);
CREATE INDEX ledger_transfers_unsequenced_idx ON ledger_transfers (seq) WHERE leaf_index IS NULL;

-- The status of every pending transfer (pending, posted, voided, expired), apart from the
-- transfer row: a posting never updates a transfer row, so it never waits on the integrator
-- (which updates transfer rows only to give them their leaf) and they cannot deadlock.
CREATE TABLE ledger_pending (
    transfer_id TEXT NOT NULL PRIMARY KEY REFERENCES ledger_transfers (id),
    status      TEXT NOT NULL CHECK (status IN ('pending', 'posted', 'voided', 'expired'))
) STRICT;

-- The compact Merkle tree (size, peaks) after the last integration: one row.
CREATE TABLE ledger_journal_head (
    id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    size  INTEGER NOT NULL,
    peaks TEXT    NOT NULL
) STRICT;
INSERT INTO ledger_journal_head (id, size, peaks) VALUES (1, 0, '');

CREATE TABLE ledger_checkpoints (
    size       INTEGER NOT NULL PRIMARY KEY,
    root       TEXT    NOT NULL,
    note       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

-- The fee snapshot of an order (issue 4 §5) and settle_info.profit_sharing.
ALTER TABLE orders ADD COLUMN fee_rate_ppm INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN fee_fen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN channel_cost_ppm INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN channel_cost_fen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN profit_sharing INTEGER NOT NULL DEFAULT 0 CHECK (profit_sharing IN (0, 1));
