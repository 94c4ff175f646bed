-- A refund is a merchant's, or paygate's own refund of a duplicate payment (a second attempt
-- of an order that the payer paid at the channel too): that one gives the whole attempt back
-- and touches neither the order's refunded_fen nor the merchant's balances.
ALTER TABLE refunds ADD COLUMN kind TEXT NOT NULL DEFAULT 'MERCHANT'
    CONSTRAINT refunds_kind_check CHECK (kind IN ('MERCHANT', 'DUPLICATE'));
-- The operator's list of duplicate payments not yet given back (admin refunds/duplicates).
CREATE INDEX refunds_duplicate_open_idx ON refunds (created_at)
    WHERE kind = 'DUPLICATE' AND state <> 'SUCCESS';
