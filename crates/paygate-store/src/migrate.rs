//! Versioned schema migrations, applied at open. Each backend keeps a `schema_version` table
//! with one row per applied migration; opening applies the missing ones in order, in one
//! transaction that also serializes two processes opening the same database at once.

use crate::StoreError;

pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "attempts_created_idx",
        sql: include_str!("../migrations/sqlite/0002_attempts_created_idx.sql"),
    },
    Migration {
        version: 3,
        name: "risk_decisions",
        sql: include_str!("../migrations/sqlite/0003_risk_decisions.sql"),
    },
    Migration {
        version: 4,
        name: "risk_rules",
        sql: include_str!("../migrations/sqlite/0004_risk_rules.sql"),
    },
    Migration {
        version: 5,
        name: "refunds",
        sql: include_str!("../migrations/sqlite/0005_refunds.sql"),
    },
    Migration {
        version: 6,
        name: "ledger",
        sql: include_str!("../migrations/sqlite/0006_ledger.sql"),
    },
    Migration {
        version: 7,
        name: "profit_sharing",
        sql: include_str!("../migrations/sqlite/0007_profit_sharing.sql"),
    },
    Migration {
        version: 8,
        name: "settlement_bills",
        sql: include_str!("../migrations/sqlite/0008_settlement_bills.sql"),
    },
    Migration {
        version: 9,
        name: "recon",
        sql: include_str!("../migrations/sqlite/0009_recon.sql"),
    },
    Migration {
        version: 10,
        name: "data_protection",
        sql: include_str!("../migrations/sqlite/0010_data_protection.sql"),
    },
    Migration {
        version: 11,
        name: "settlement",
        sql: include_str!("../migrations/sqlite/0011_settlement.sql"),
    },
    Migration {
        version: 12,
        name: "attempts_next_poll",
        sql: include_str!("../migrations/sqlite/0012_attempts_next_poll.sql"),
    },
    Migration {
        version: 13,
        name: "notifications_answer_serial",
        sql: include_str!("../migrations/sqlite/0013_notifications_answer_serial.sql"),
    },
    Migration {
        version: 14,
        name: "attempts_poll_index_by_schedule",
        sql: include_str!("../migrations/sqlite/0014_attempts_poll_index_by_schedule.sql"),
    },
    Migration {
        version: 15,
        name: "refund_kind",
        sql: include_str!("../migrations/sqlite/0015_refund_kind.sql"),
    },
];

pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "attempts_created_idx",
        sql: include_str!("../migrations/postgres/0002_attempts_created_idx.sql"),
    },
    Migration {
        version: 3,
        name: "risk_decisions",
        sql: include_str!("../migrations/postgres/0003_risk_decisions.sql"),
    },
    Migration {
        version: 4,
        name: "risk_rules",
        sql: include_str!("../migrations/postgres/0004_risk_rules.sql"),
    },
    Migration {
        version: 5,
        name: "refunds",
        sql: include_str!("../migrations/postgres/0005_refunds.sql"),
    },
    Migration {
        version: 6,
        name: "ledger",
        sql: include_str!("../migrations/postgres/0006_ledger.sql"),
    },
    Migration {
        version: 7,
        name: "profit_sharing",
        sql: include_str!("../migrations/postgres/0007_profit_sharing.sql"),
    },
    Migration {
        version: 8,
        name: "settlement_bills",
        sql: include_str!("../migrations/postgres/0008_settlement_bills.sql"),
    },
    Migration {
        version: 9,
        name: "recon",
        sql: include_str!("../migrations/postgres/0009_recon.sql"),
    },
    Migration {
        version: 10,
        name: "data_protection",
        sql: include_str!("../migrations/postgres/0010_data_protection.sql"),
    },
    Migration {
        version: 11,
        name: "settlement",
        sql: include_str!("../migrations/postgres/0011_settlement.sql"),
    },
    Migration {
        version: 12,
        name: "attempts_next_poll",
        sql: include_str!("../migrations/postgres/0012_attempts_next_poll.sql"),
    },
    Migration {
        version: 13,
        name: "notifications_answer_serial",
        sql: include_str!("../migrations/postgres/0013_notifications_answer_serial.sql"),
    },
    Migration {
        version: 14,
        name: "attempts_poll_index_by_schedule",
        sql: include_str!("../migrations/postgres/0014_attempts_poll_index_by_schedule.sql"),
    },
    Migration {
        version: 15,
        name: "refund_kind",
        sql: include_str!("../migrations/postgres/0015_refund_kind.sql"),
    },
];

/// The migrations still to apply over `current`; refuses a database that a newer build has
/// migrated past what this one knows (its code would misread the newer schema).
pub(crate) fn pending(
    all: &'static [Migration],
    current: i64,
) -> Result<&'static [Migration], StoreError> {
    let known = all.last().map_or(0, |m| m.version);
    if current > known {
        return Err(StoreError::Database(format!(
            "database schema version {current} is newer than this build's {known}"
        )));
    }
    let start = all
        .iter()
        .position(|m| m.version > current)
        .unwrap_or(all.len());
    Ok(&all[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_pending_skips_applied_ones() {
        for list in [SQLITE, POSTGRES] {
            assert!(list.windows(2).all(|w| w[0].version < w[1].version));
            assert_eq!(pending(list, 0).unwrap().len(), list.len());
            assert!(
                pending(list, list.last().unwrap().version)
                    .unwrap()
                    .is_empty()
            );
            assert!(pending(list, i64::MAX).is_err());
        }
        assert_eq!(SQLITE.len(), POSTGRES.len(), "both backends move in step");
    }

    #[test]
    fn poll_index_predicate_is_implied_by_the_poll_query() {
        // The index holds scheduled attempts only; the poll query's `next_poll_at <= ?` implies
        // `next_poll_at IS NOT NULL`, which is what lets both planners use a partial index.
        for list in [SQLITE, POSTGRES] {
            // The last migration that (re)defines the index is the one that counts.
            let defines = list
                .iter()
                .rev()
                .find(|m| m.sql.contains("CREATE INDEX attempts_poll_idx"))
                .expect("a migration defines attempts_poll_idx");
            assert!(
                defines
                    .sql
                    .contains("ON attempts (next_poll_at) WHERE next_poll_at IS NOT NULL;"),
                "{}",
                defines.sql
            );
        }
        assert!(include_str!("sqlite/ops.rs").contains("AND a.next_poll_at <= ?1"));
        assert!(include_str!("postgres.rs").contains("AND a.next_poll_at <= $1"));
    }
}
