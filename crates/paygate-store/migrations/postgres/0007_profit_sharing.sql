-- Profit sharing (§4.8). The gateway's share order id is also the out_order_no at the
-- channel, and its return id the out_return_no there: each gateway share order or return is
-- exactly one at the channel, whatever the merchant's numbers.
--
-- orders.shared_fen is what receivers hold (splits not CLOSED, less returns that succeeded);
-- orders.share_released_fen what came back by returns; orders.share_unfrozen is 1 once the rest
-- was unfrozen. A split is created only by a compare-and-set on these in the transaction that
-- inserts it (see src/sharing.rs); the CHECK is the last line: refunds and shares together never
-- exceed what was paid.
ALTER TABLE orders ADD COLUMN shared_fen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD CONSTRAINT orders_shared_fen_check
    CHECK (shared_fen >= 0 AND refunded_fen + shared_fen <= total_fen);
ALTER TABLE orders ADD COLUMN share_released_fen BIGINT NOT NULL DEFAULT 0
    CONSTRAINT orders_share_released_fen_check CHECK (share_released_fen >= 0);
ALTER TABLE orders ADD COLUMN share_unfrozen BIGINT NOT NULL DEFAULT 0
    CONSTRAINT orders_share_unfrozen_check CHECK (share_unfrozen IN (0, 1));

-- Receivers per merchant. Names are not kept (they go to the channel encrypted, once).
CREATE TABLE share_receivers (
    mchid           TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    account         TEXT    NOT NULL,
    channel_id      TEXT    NOT NULL,
    relation_type   TEXT    NOT NULL,
    custom_relation TEXT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (mchid, type, account)
);
-- Who else uses a receiver at a channel (a direct channel's receivers are shared).
CREATE INDEX share_receivers_channel_idx ON share_receivers (channel_id, type, account);

-- A merchant's maximum split ratio of an order's total, in 万分比; absent = the default.
CREATE TABLE share_configs (
    mchid        TEXT    NOT NULL PRIMARY KEY,
    max_ratio_bp BIGINT NOT NULL CONSTRAINT share_configs_ratio_check CHECK (max_ratio_bp BETWEEN 0 AND 10000),
    updated_at   BIGINT NOT NULL
);

CREATE TABLE share_orders (
    order_id         TEXT    NOT NULL PRIMARY KEY,
    mchid            TEXT    NOT NULL,
    out_order_no     TEXT    NOT NULL,
    transaction_id   TEXT    NOT NULL REFERENCES orders (transaction_id),
    attempt_id       TEXT    NOT NULL REFERENCES attempts (attempt_id),
    channel_id       TEXT    NOT NULL,
    kind             TEXT    NOT NULL CONSTRAINT share_orders_kind_check CHECK (kind IN ('SPLIT', 'UNFREEZE')),
    state            TEXT    NOT NULL CONSTRAINT share_orders_state_check CHECK (state IN ('CREATED', 'PROCESSING', 'FINISHED', 'CLOSED')),
    amount_fen       BIGINT NOT NULL CONSTRAINT share_orders_amount_check CHECK (amount_fen >= 0),
    unfreeze_unsplit BIGINT NOT NULL CONSTRAINT share_orders_unfreeze_check CHECK (unfreeze_unsplit IN (0, 1)),
    receivers_json   TEXT    NOT NULL,
    description      TEXT,
    fingerprint      TEXT    NOT NULL,
    channel_order_id TEXT,
    error_code       TEXT,
    error_message    TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    last_polled_at   BIGINT,
    version          BIGINT NOT NULL CONSTRAINT share_orders_version_check CHECK (version >= 0),
    CONSTRAINT share_orders_mchid_out_order_no_key UNIQUE (mchid, out_order_no)
);
CREATE INDEX share_orders_transaction_idx ON share_orders (transaction_id, created_at);
CREATE INDEX share_orders_poll_idx ON share_orders (last_polled_at, created_at)
    WHERE state IN ('CREATED', 'PROCESSING');

CREATE TABLE share_returns (
    return_id         TEXT    NOT NULL PRIMARY KEY,
    mchid             TEXT    NOT NULL,
    out_return_no     TEXT    NOT NULL,
    share_order_id    TEXT    NOT NULL REFERENCES share_orders (order_id),
    out_order_no      TEXT    NOT NULL,
    transaction_id    TEXT    NOT NULL,
    channel_id        TEXT    NOT NULL,
    return_mchid      TEXT    NOT NULL,
    amount_fen        BIGINT NOT NULL CONSTRAINT share_returns_amount_check CHECK (amount_fen > 0),
    description       TEXT    NOT NULL,
    state             TEXT    NOT NULL CONSTRAINT share_returns_state_check CHECK (state IN ('CREATED', 'PROCESSING', 'SUCCESS', 'FAILED')),
    fail_reason       TEXT,
    channel_return_id TEXT,
    error_code        TEXT,
    error_message     TEXT,
    fingerprint       TEXT    NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    finished_at       BIGINT,
    last_polled_at    BIGINT,
    version           BIGINT NOT NULL CONSTRAINT share_returns_version_check CHECK (version >= 0),
    CONSTRAINT share_returns_mchid_out_return_no_key UNIQUE (mchid, out_return_no)
);
CREATE INDEX share_returns_order_idx ON share_returns (share_order_id, return_mchid);
CREATE INDEX share_returns_poll_idx ON share_returns (last_polled_at, created_at)
    WHERE state IN ('CREATED', 'PROCESSING');
