-- Daily settlement (issue 4 §5): merchant pending -> available, T+N, one row per
-- (merchant, Beijing business day). SETTLED and NOTHING are final; HELD (a risk hold was on
-- when the day was run) moves to SETTLED or NOTHING on a run after the release.
CREATE TABLE settlements (
    mchid          TEXT    NOT NULL,
    business_date  TEXT    NOT NULL CHECK (length(business_date) = 10),
    settlement_id  TEXT    NOT NULL UNIQUE,
    status         TEXT    NOT NULL CHECK (status IN ('SETTLED', 'HELD', 'NOTHING')),
    amount_fen     INTEGER NOT NULL CHECK (amount_fen >= 0),
    payments       INTEGER NOT NULL CHECK (payments >= 0),
    refunds        INTEGER NOT NULL CHECK (refunds >= 0),
    fee_fen        INTEGER NOT NULL CHECK (fee_fen >= 0),
    -- The `settle` ledger transfer (hex id); NULL unless SETTLED.
    transfer_id    TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (mchid, business_date)
) STRICT;
CREATE INDEX settlements_date_idx ON settlements (business_date, mchid);
CREATE INDEX settlements_held_idx ON settlements (business_date) WHERE status = 'HELD';

-- Merchants under a risk hold: no settlement while a row is here.
CREATE TABLE settlement_holds (
    mchid     TEXT    NOT NULL PRIMARY KEY,
    reason    TEXT    NOT NULL,
    held_at   INTEGER NOT NULL
) STRICT;

-- Transfers by account and time: the amount rule reads a merchant's pending account after a cut.
CREATE INDEX ledger_transfers_credit_time_idx ON ledger_transfers (credit_account_id, timestamp_ms);
CREATE INDEX ledger_transfers_debit_time_idx ON ledger_transfers (debit_account_id, timestamp_ms);
