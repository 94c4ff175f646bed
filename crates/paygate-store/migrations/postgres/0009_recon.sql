-- Reconciliation (issue 9): runs, discrepancies with both sides' evidence, the cross-day
-- pool, end-of-day balances, and the audit of resolutions. Dates are Beijing business days
-- as YYYY-MM-DD text; times Unix milliseconds.

CREATE TABLE recon_runs (
    run_id             TEXT    NOT NULL PRIMARY KEY,
    bill_date          TEXT    NOT NULL,
    channel_id         TEXT    NOT NULL,
    status             TEXT    NOT NULL CONSTRAINT recon_runs_status_check CHECK (status IN ('DONE', 'FAILED')),
    started_at         BIGINT NOT NULL,
    finished_at        BIGINT NOT NULL,
    bill_rows          BIGINT NOT NULL,
    platform_rows      BIGINT NOT NULL,
    matched            BIGINT NOT NULL,
    discrepancies      BIGINT NOT NULL,
    trade_bill_sha1    TEXT,
    fundflow_bill_sha1 TEXT,
    summary_json       TEXT    NOT NULL,
    error              TEXT,
    CONSTRAINT recon_runs_day_key UNIQUE (bill_date, channel_id)
);

CREATE TABLE recon_discrepancies (
    id             TEXT    NOT NULL PRIMARY KEY,
    run_id         TEXT    NOT NULL,
    bill_date      TEXT    NOT NULL,
    channel_id     TEXT    NOT NULL,
    class          TEXT    NOT NULL CONSTRAINT recon_discrepancies_class_check CHECK (class IN ('CHANNEL_ONLY', 'PLATFORM_ONLY', 'AMOUNT_MISMATCH', 'STATUS_MISMATCH', 'FEE_MISMATCH', 'DUPLICATE')),
    kind           TEXT    NOT NULL CONSTRAINT recon_discrepancies_kind_check CHECK (kind IN ('P', 'R')),
    out_no         TEXT    NOT NULL,
    seq            BIGINT NOT NULL,
    mchid          TEXT,
    transaction_id TEXT,
    channel_json   TEXT,
    platform_json  TEXT,
    state          TEXT    NOT NULL CONSTRAINT recon_discrepancies_state_check CHECK (state IN ('OPEN', 'AUTO_RESOLVED', 'RESOLVED')),
    resolution     TEXT,
    resolved_by    TEXT,
    reason         TEXT,
    created_at     BIGINT NOT NULL,
    resolved_at    BIGINT,
    CONSTRAINT recon_discrepancies_finding_key UNIQUE (bill_date, channel_id, class, kind, out_no, seq)
);

CREATE INDEX recon_discrepancies_state_idx ON recon_discrepancies (state, bill_date);

CREATE TABLE recon_pool (
    id           TEXT    NOT NULL PRIMARY KEY,
    channel_id   TEXT    NOT NULL,
    bill_date    TEXT    NOT NULL,
    class        TEXT    NOT NULL CONSTRAINT recon_pool_class_check CHECK (class IN ('CHANNEL_ONLY', 'PLATFORM_ONLY')),
    kind         TEXT    NOT NULL CONSTRAINT recon_pool_kind_check CHECK (kind IN ('P', 'R')),
    out_no       TEXT    NOT NULL,
    record_json  TEXT    NOT NULL,
    state        TEXT    NOT NULL CONSTRAINT recon_pool_state_check CHECK (state IN ('HELD', 'MATCHED', 'MISMATCHED', 'EXPIRED')),
    settled_date TEXT,
    created_at   BIGINT NOT NULL,
    CONSTRAINT recon_pool_item_key UNIQUE (channel_id, bill_date, class, kind, out_no)
);

CREATE INDEX recon_pool_held_idx ON recon_pool (channel_id, state, bill_date);

CREATE TABLE recon_balances (
    bill_date     TEXT    NOT NULL,
    channel_id    TEXT    NOT NULL,
    scope         TEXT    NOT NULL,
    platform_json TEXT    NOT NULL,
    channel_json  TEXT    NOT NULL,
    balanced      BOOLEAN NOT NULL,
    detail        TEXT    NOT NULL,
    at            BIGINT NOT NULL,
    PRIMARY KEY (bill_date, channel_id, scope)
);

CREATE TABLE recon_audit (
    discrepancy_id TEXT    NOT NULL REFERENCES recon_discrepancies (id),
    actor          TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    before_state   TEXT    NOT NULL,
    after_state    TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    at             BIGINT NOT NULL
);

CREATE INDEX recon_audit_discrepancy_idx ON recon_audit (discrepancy_id, at);

-- The day's paged reads: orders by success time, refunds by creation.
CREATE INDEX orders_success_time_idx ON orders (success_time) WHERE success_time IS NOT NULL;
CREATE INDEX refunds_created_idx ON refunds (created_at);
