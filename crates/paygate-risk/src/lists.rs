//! Block and allow lists with expiry, replaced as a whole (they travel with the rule set's
//! version through the repository).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Block or allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    Block,
    Allow,
}

/// What a list entry names. Values are compared as written: a payer key
/// ([`crate::RiskEngine::payer_key`]), a `device_id` or a device fingerprint (`device_fp`,
/// hex), an IP address, a subnet as the engine writes it (`203.0.113.0/24`), an mchid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListEntity {
    Payer,
    Device,
    Ip,
    Subnet,
    Merchant,
}

/// One entry as stored and audited.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListEntry {
    pub kind: ListKind,
    pub entity: ListEntity,
    pub value: String,
    /// `None`: until removed.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Why it is there (a case number, a chargeback), for the audit trail.
    #[serde(default)]
    pub reason: String,
}

/// The lists, indexed for lookups on the decision path.
#[derive(Clone, Debug, Default)]
pub struct Lists {
    entries: HashMap<(ListKind, ListEntity), HashMap<String, Option<OffsetDateTime>>>,
    source: Vec<ListEntry>,
}

impl Lists {
    pub fn new(entries: Vec<ListEntry>) -> Self {
        let mut index: HashMap<(ListKind, ListEntity), HashMap<String, Option<OffsetDateTime>>> =
            HashMap::new();
        for e in &entries {
            let slot = index
                .entry((e.kind, e.entity))
                .or_default()
                .entry(e.value.clone())
                .or_insert(e.expires_at);
            // Two entries for one value: the longer-lived one wins.
            *slot = match (*slot, e.expires_at) {
                (None, _) | (_, None) => None,
                (Some(a), Some(b)) => Some(a.max(b)),
            };
        }
        Self {
            entries: index,
            source: entries,
        }
    }

    /// Whether `value` is on the list at `at` (an expired entry no longer counts).
    pub fn contains(
        &self,
        kind: ListKind,
        entity: ListEntity,
        value: &str,
        at: OffsetDateTime,
    ) -> bool {
        match self.entries.get(&(kind, entity)).and_then(|m| m.get(value)) {
            Some(None) => true,
            Some(Some(expires_at)) => at < *expires_at,
            None => false,
        }
    }

    pub fn entries(&self) -> &[ListEntry] {
        &self.source
    }

    pub fn len(&self) -> usize {
        self.source.len()
    }

    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn entries_expire() {
        let lists = Lists::new(vec![ListEntry {
            kind: ListKind::Block,
            entity: ListEntity::Payer,
            value: "p1".into(),
            expires_at: Some(datetime!(2026-11-10 00:00 UTC)),
            reason: "chargeback".into(),
        }]);
        let before = datetime!(2026-11-09 23:59 UTC);
        let after = datetime!(2026-11-10 00:00 UTC);
        assert!(lists.contains(ListKind::Block, ListEntity::Payer, "p1", before));
        assert!(!lists.contains(ListKind::Block, ListEntity::Payer, "p1", after));
        assert!(!lists.contains(ListKind::Allow, ListEntity::Payer, "p1", before));
    }
}
