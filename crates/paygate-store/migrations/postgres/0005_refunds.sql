-- Refunds (§4.7). The gateway's refund_id is also the out_refund_no at the channel, so every
-- gateway refund is exactly one refund there, whatever the merchant's out_refund_no.
--
-- orders.refunded_fen is the sum of the order's refunds that are not CLOSED: a refund is
-- created only by a compare-and-set `refunded_fen + amount <= total_fen` in the transaction
-- that inserts it, and a CLOSED refund gives its amount back in the transaction that closes
-- it. The CHECK is the last line: no bug and no second node can refund more than was paid.
ALTER TABLE orders ADD COLUMN refunded_fen BIGINT NOT NULL DEFAULT 0
    CONSTRAINT orders_refunded_fen_check CHECK (refunded_fen >= 0 AND refunded_fen <= total_fen);

CREATE TABLE refunds (
    refund_id             TEXT    NOT NULL PRIMARY KEY,
    mchid                 TEXT    NOT NULL,
    out_refund_no         TEXT    NOT NULL,
    transaction_id        TEXT    NOT NULL REFERENCES orders (transaction_id),
    out_trade_no          TEXT    NOT NULL,
    attempt_id            TEXT    NOT NULL REFERENCES attempts (attempt_id),
    channel_id            TEXT    NOT NULL,
    state                 TEXT    NOT NULL CONSTRAINT refunds_state_check CHECK (state IN ('CREATED', 'PROCESSING', 'SUCCESS', 'CLOSED', 'ABNORMAL')),
    amount_fen            BIGINT  NOT NULL CONSTRAINT refunds_amount_fen_check CHECK (amount_fen > 0),
    total_fen             BIGINT  NOT NULL CONSTRAINT refunds_total_fen_check CHECK (total_fen >= amount_fen),
    currency              TEXT    NOT NULL,
    reason                TEXT,
    notify_url            TEXT    NOT NULL,
    fingerprint           TEXT    NOT NULL,
    request_json          TEXT    NOT NULL,
    channel_refund_id     TEXT,
    user_received_account TEXT,
    funds_account         TEXT,
    error_code            TEXT,
    error_message         TEXT,
    created_at            BIGINT  NOT NULL,
    updated_at            BIGINT  NOT NULL,
    success_time          BIGINT,
    last_polled_at        BIGINT,
    version               BIGINT  NOT NULL CONSTRAINT refunds_version_check CHECK (version >= 0),
    CONSTRAINT refunds_mchid_out_refund_no_key UNIQUE (mchid, out_refund_no)
);

CREATE INDEX refunds_transaction_idx ON refunds (transaction_id, created_at);
-- The poller's work list: refunds not settled yet, never polled first.
CREATE INDEX refunds_poll_idx ON refunds (last_polled_at, created_at)
    WHERE state IN ('CREATED', 'PROCESSING');
