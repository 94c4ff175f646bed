-- Risk decisions worth keeping: every one that flagged, challenged or denied, or that fired a rule.
CREATE TABLE risk_decisions (
    id             TEXT    NOT NULL PRIMARY KEY,
    mchid          TEXT    NOT NULL,
    kind           TEXT    NOT NULL CONSTRAINT risk_decisions_kind_check CHECK (kind IN ('PREPAY', 'REFUND')),
    reference      TEXT    NOT NULL,
    transaction_id TEXT,
    action         TEXT    NOT NULL CONSTRAINT risk_decisions_action_check CHECK (action IN ('ALLOW', 'REVIEW', 'CHALLENGE', 'DENY')),
    score          INTEGER NOT NULL,
    fired_json     TEXT    NOT NULL,
    rules_version  INTEGER NOT NULL,
    at             INTEGER NOT NULL
) STRICT;

CREATE INDEX risk_decisions_reference_idx ON risk_decisions (mchid, reference, at);
CREATE INDEX risk_decisions_action_idx ON risk_decisions (action, at);
