-- Merchant bills (§4.10, §7), built from paygate's own records.
--
-- A business day (Beijing, cut at 00:00 +08:00) has bills only once it is closed: the daily
-- job closes yesterday after the configured hour, the sandbox may close any day at once. A
-- bill is generated once per (merchant, day, kind) and kept, so every download, on any node,
-- is byte-identical; the first writer wins (the primary key), the others read its bytes.

CREATE TABLE bill_days (
    bill_date TEXT    NOT NULL PRIMARY KEY CONSTRAINT bill_days_date_check CHECK (length(bill_date) = 10),
    closed_at INTEGER NOT NULL,
    -- `schedule` (the daily job) or `sandbox`.
    closed_by TEXT    NOT NULL
) STRICT;

CREATE TABLE bill_files (
    mchid      TEXT    NOT NULL,
    bill_date  TEXT    NOT NULL REFERENCES bill_days (bill_date),
    -- TRADE_ALL, TRADE_SUCCESS, TRADE_REFUND, FUNDFLOW_BASIC.
    kind       TEXT    NOT NULL,
    -- Lowercase hex SHA1 of `bytes` (the uncompressed file, BOM included): the hash_value.
    sha1       TEXT    NOT NULL CONSTRAINT bill_files_sha1_check CHECK (length(sha1) = 40),
    bytes      BLOB    NOT NULL,
    row_count  INTEGER NOT NULL CONSTRAINT bill_files_row_count_check CHECK (row_count >= 0),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (mchid, bill_date, kind)
) STRICT;

-- Download URLs are short-lived tokens any node can serve.
CREATE TABLE bill_downloads (
    token      TEXT    NOT NULL PRIMARY KEY,
    mchid      TEXT    NOT NULL,
    bill_date  TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    gzip       INTEGER NOT NULL CONSTRAINT bill_downloads_gzip_check CHECK (gzip IN (0, 1)),
    expires_at INTEGER NOT NULL,
    FOREIGN KEY (mchid, bill_date, kind) REFERENCES bill_files (mchid, bill_date, kind)
) STRICT;

CREATE INDEX bill_downloads_expires_idx ON bill_downloads (expires_at);

-- A merchant's payments and refunds of one day, in time order (the bills' row sources).
CREATE INDEX orders_mchid_success_time_idx ON orders (mchid, success_time, transaction_id)
    WHERE success_time IS NOT NULL;
CREATE INDEX refunds_mchid_created_idx ON refunds (mchid, created_at, refund_id);
