-- paygate schema v1 (SQLite). Times are Unix milliseconds UTC; money is INTEGER fen;
-- enum columns hold their wire strings. STRICT tables refuse a REAL (or any wrong type)
-- where an integer belongs, so no float can ever reach a money column.

CREATE TABLE merchants (
    mchid             TEXT    NOT NULL PRIMARY KEY,
    name              TEXT    NOT NULL,
    appid             TEXT    NOT NULL,
    apiv3_key         TEXT    NOT NULL,
    status            TEXT    NOT NULL CONSTRAINT merchants_status_check CHECK (status IN ('ACTIVE', 'DISABLED')),
    channel_id        TEXT    NOT NULL,
    channel_sub_mchid TEXT,
    channel_sub_appid TEXT,
    created_at        INTEGER NOT NULL
) STRICT;

CREATE TABLE merchant_certs (
    mchid      TEXT    NOT NULL REFERENCES merchants (mchid),
    serial_no  TEXT    NOT NULL,
    pem        TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (mchid, serial_no)
) STRICT;

CREATE TABLE platform_keys (
    key_id          TEXT    NOT NULL PRIMARY KEY,
    kind            TEXT    NOT NULL CONSTRAINT platform_keys_kind_check CHECK (kind IN ('CERTIFICATE', 'PUBLIC_KEY')),
    private_key_pem TEXT    NOT NULL,
    certificate_pem TEXT,
    created_at      INTEGER NOT NULL
) STRICT;

CREATE TABLE orders (
    transaction_id TEXT    NOT NULL PRIMARY KEY,
    mchid          TEXT    NOT NULL,
    out_trade_no   TEXT    NOT NULL,
    appid          TEXT    NOT NULL,
    trade_type     TEXT    NOT NULL,
    state          TEXT    NOT NULL CONSTRAINT orders_state_check CHECK (state IN ('NOTPAY', 'PAYERROR', 'SUCCESS', 'REFUND', 'CLOSED')),
    description    TEXT    NOT NULL,
    attach         TEXT,
    notify_url     TEXT    NOT NULL,
    total_fen      INTEGER NOT NULL CONSTRAINT orders_total_fen_check CHECK (total_fen > 0),
    currency       TEXT    NOT NULL,
    payer_openid   TEXT,
    time_expire    INTEGER NOT NULL,
    fingerprint    TEXT    NOT NULL,
    request_json   TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    success_time   INTEGER,
    bank_type      TEXT,
    version        INTEGER NOT NULL CONSTRAINT orders_version_check CHECK (version >= 0),
    CONSTRAINT orders_mchid_out_trade_no_key UNIQUE (mchid, out_trade_no)
) STRICT;

CREATE TABLE attempts (
    attempt_id             TEXT    NOT NULL PRIMARY KEY,
    transaction_id         TEXT    NOT NULL REFERENCES orders (transaction_id),
    seq                    INTEGER NOT NULL,
    channel_id             TEXT    NOT NULL,
    state                  TEXT    NOT NULL CONSTRAINT attempts_state_check CHECK (state IN ('CREATED', 'PREPAID', 'FAILED', 'UNKNOWN', 'CLOSED', 'PAID')),
    prepay_id              TEXT,
    code_url               TEXT,
    h5_url                 TEXT,
    prepay_expires_at      INTEGER,
    channel_transaction_id TEXT,
    error_code             TEXT,
    error_message          TEXT,
    decision               TEXT,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL,
    last_polled_at         INTEGER,
    -- Two racing retries of one order cannot both become attempt n; also the index for attempts().
    CONSTRAINT attempts_transaction_id_seq_key UNIQUE (transaction_id, seq)
) STRICT;

-- The poller's work list: live attempts by when they were last polled (never polled first).
CREATE INDEX attempts_poll_idx ON attempts (last_polled_at, created_at)
    WHERE state IN ('CREATED', 'PREPAID', 'UNKNOWN');

CREATE TABLE order_repairs (
    id             TEXT    NOT NULL PRIMARY KEY,
    transaction_id TEXT    NOT NULL REFERENCES orders (transaction_id),
    source         TEXT    NOT NULL,
    way            TEXT    NOT NULL,
    before_state   TEXT    NOT NULL CONSTRAINT order_repairs_before_state_check CHECK (before_state IN ('NOTPAY', 'PAYERROR', 'SUCCESS', 'REFUND', 'CLOSED')),
    after_state    TEXT    NOT NULL CONSTRAINT order_repairs_after_state_check CHECK (after_state IN ('NOTPAY', 'PAYERROR', 'SUCCESS', 'REFUND', 'CLOSED')),
    detail         TEXT    NOT NULL,
    at             INTEGER NOT NULL
) STRICT;

CREATE INDEX order_repairs_transaction_idx ON order_repairs (transaction_id, at);

CREATE TABLE notifications (
    id              TEXT    NOT NULL PRIMARY KEY,
    mchid           TEXT    NOT NULL,
    transaction_id  TEXT    NOT NULL REFERENCES orders (transaction_id),
    event_type      TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    plaintext       TEXT    NOT NULL,
    state           TEXT    NOT NULL CONSTRAINT notifications_state_check CHECK (state IN ('PENDING', 'DELIVERED', 'FAILED')),
    attempts        INTEGER NOT NULL CONSTRAINT notifications_attempts_check CHECK (attempts >= 0),
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER
) STRICT;

-- The outbox claim: PENDING rows by due time.
CREATE INDEX notifications_due_idx ON notifications (state, next_attempt_at);
CREATE INDEX notifications_transaction_idx ON notifications (transaction_id, created_at);

CREATE TABLE notification_deliveries (
    notification_id TEXT    NOT NULL REFERENCES notifications (id),
    attempt         INTEGER NOT NULL,
    at              INTEGER NOT NULL,
    http_status     INTEGER,
    error           TEXT,
    duration_ms     INTEGER NOT NULL,
    PRIMARY KEY (notification_id, attempt)
) STRICT;
