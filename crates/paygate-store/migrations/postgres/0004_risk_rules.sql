-- Versioned risk rule sets (hot reload): each row is a whole set, written once and never
-- changed. Versions have no gaps: a save inserts exactly the newest + 1 (checked in the same
-- transaction), so two operators saving at once cannot both win.
CREATE TABLE risk_rule_sets (
    version    BIGINT  NOT NULL PRIMARY KEY CONSTRAINT risk_rule_sets_version_check CHECK (version > 0),
    rules_json TEXT    NOT NULL,
    lists_json TEXT    NOT NULL,
    created_by TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    comment    TEXT    NOT NULL
);

-- Who changed what, when: one row per saved version, written in the same transaction. Kept
-- apart from the sets so the trail reads without loading whole rule sets.
CREATE TABLE risk_rule_audit (
    version      BIGINT  NOT NULL PRIMARY KEY REFERENCES risk_rule_sets (version),
    author       TEXT    NOT NULL,
    at           BIGINT  NOT NULL,
    comment      TEXT    NOT NULL,
    changes_json TEXT    NOT NULL
);
