//! Versioned storage of rule sets and lists, the audit trail, and the loop that keeps every
//! node's engine on the newest version.
//!
//! A *version* is a whole rule set plus the lists, saved together by one person with a comment.
//! Saving validates first ([`validate_change`]: every rule compiles, and its examples, when
//! present, do what they say), so a broken rule is refused at the door with an error naming it.
//! The reloader on each node polls [`RuleRepository::current_version`] every `every` (≤ 60 s)
//! and at once when woken ([`ReloaderHandle::notify`], or the repository's own
//! [`RuleRepository::watch`]); a version that does not compile on a node (say, a newer node
//! wrote a rule naming a feature this one lacks) is logged and skipped, and the engine keeps
//! deciding on the set it has.
//!
//! The trait is small on purpose: a database implementation stores one row per version
//! (`version`, `author`, `created_at`, `comment`, `rules` JSON, `lists` JSON, `summary` JSON)
//! and answers `current_version` with `SELECT max(version)`. It must call
//! [`validate_change`] before inserting and insert with `version = previous + 1` under a unique
//! constraint, so two saves cannot both win (the loser gets [`RepoError::Conflict`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::engine::RiskEngine;
use crate::lists::{ListEntry, Lists};
use crate::rule_examples::{ExampleError, check_rule_examples};
use crate::rules::{RuleError, RuleSource, compile_rules};

/// A change someone wants to save.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleChange {
    pub author: String,
    pub comment: String,
    pub rules: Vec<RuleSource>,
    pub lists: Vec<ListEntry>,
    /// The version the author edited; the save fails with [`RepoError::Conflict`] if another
    /// change landed since. `None` skips the check.
    pub base_version: Option<u64>,
}

/// A stored version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleSetVersion {
    pub version: u64,
    pub author: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub comment: String,
    pub rules: Vec<RuleSource>,
    pub lists: Vec<ListEntry>,
}

/// Who changed what, when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub version: u64,
    pub author: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub comment: String,
    pub rules_added: Vec<String>,
    pub rules_removed: Vec<String>,
    pub rules_changed: Vec<String>,
    pub list_entries_added: usize,
    pub list_entries_removed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("refused: {0}")]
    Invalid(#[from] RuleError),
    #[error("refused: {0}")]
    Example(#[from] ExampleError),
    #[error("version {base} is no longer current (now {current}): reload and apply again")]
    Conflict { base: u64, current: u64 },
    #[error("no version {0}")]
    NotFound(u64),
    #[error("storage: {0}")]
    Storage(String),
}

/// Versioned rule sets and lists with their audit trail.
#[async_trait]
pub trait RuleRepository: Send + Sync {
    /// The newest version; 0 when nothing was ever saved.
    async fn current_version(&self) -> Result<u64, RepoError>;
    /// One stored version.
    async fn load(&self, version: u64) -> Result<RuleSetVersion, RepoError>;
    /// Validates (see [`validate_change`]) and stores `change` as the next version.
    async fn save(&self, change: RuleChange) -> Result<u64, RepoError>;
    /// The newest `limit` audit records, newest first.
    async fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, RepoError>;
    /// A channel that changes when a version is saved, if the store can push (an in-process
    /// store, PostgreSQL `LISTEN`); `None` leaves the reloader to poll.
    fn watch(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

/// What every repository checks before saving: the rules compile, and every example that is
/// present fires (or passes) as it says.
pub fn validate_change(change: &RuleChange) -> Result<(), RepoError> {
    compile_rules(&change.rules, 0)?;
    for r in &change.rules {
        if !r.example_fires.is_null() || !r.example_passes.is_null() {
            check_rule_examples(r)?;
        }
    }
    Ok(())
}

/// The audit summary of going from `old` to `new`.
pub fn summarize(
    version: u64,
    author: &str,
    created_at: OffsetDateTime,
    comment: &str,
    old: Option<&RuleSetVersion>,
    new: &RuleChange,
) -> AuditRecord {
    let before: BTreeMap<&str, &RuleSource> = old
        .map(|o| o.rules.iter().map(|r| (r.id.as_str(), r)).collect())
        .unwrap_or_default();
    let after: BTreeMap<&str, &RuleSource> = new.rules.iter().map(|r| (r.id.as_str(), r)).collect();
    let ids = |m: &BTreeMap<&str, &RuleSource>| m.keys().map(|s| (*s).to_owned()).collect();
    let b: BTreeSet<String> = ids(&before);
    let a: BTreeSet<String> = ids(&after);
    let changed = a
        .intersection(&b)
        .filter(|id| before.get(id.as_str()) != after.get(id.as_str()))
        .cloned()
        .collect();
    let key = |e: &ListEntry| serde_json::to_string(e).unwrap_or_default();
    let lb: BTreeSet<String> = old
        .map(|o| o.lists.iter().map(key).collect())
        .unwrap_or_default();
    let la: BTreeSet<String> = new.lists.iter().map(key).collect();
    AuditRecord {
        version,
        author: author.to_owned(),
        created_at,
        comment: comment.to_owned(),
        rules_added: a.difference(&b).cloned().collect(),
        rules_removed: b.difference(&a).cloned().collect(),
        rules_changed: changed,
        list_entries_added: la.difference(&lb).count(),
        list_entries_removed: lb.difference(&la).count(),
    }
}

/// A repository in memory: for tests, single-node setups, and as the reference behaviour.
pub struct InMemoryRuleRepository {
    inner: Mutex<Vec<(RuleSetVersion, AuditRecord)>>,
    tx: watch::Sender<u64>,
}

impl Default for InMemoryRuleRepository {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryRuleRepository {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(0);
        Self {
            inner: Mutex::new(Vec::new()),
            tx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(RuleSetVersion, AuditRecord)>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl RuleRepository for InMemoryRuleRepository {
    async fn current_version(&self) -> Result<u64, RepoError> {
        Ok(self.lock().last().map(|(v, _)| v.version).unwrap_or(0))
    }

    async fn load(&self, version: u64) -> Result<RuleSetVersion, RepoError> {
        self.lock()
            .iter()
            .find(|(v, _)| v.version == version)
            .map(|(v, _)| v.clone())
            .ok_or(RepoError::NotFound(version))
    }

    async fn save(&self, change: RuleChange) -> Result<u64, RepoError> {
        // Validation compiles every rule: do it outside the lock.
        validate_change(&change)?;
        let version = {
            let mut all = self.lock();
            let current = all.last().map(|(v, _)| v.version).unwrap_or(0);
            if let Some(base) = change.base_version
                && base != current
            {
                return Err(RepoError::Conflict { base, current });
            }
            let version = current + 1;
            let now = OffsetDateTime::now_utc();
            let audit = summarize(
                version,
                &change.author,
                now,
                &change.comment,
                all.last().map(|(v, _)| v),
                &change,
            );
            all.push((
                RuleSetVersion {
                    version,
                    author: change.author,
                    created_at: now,
                    comment: change.comment,
                    rules: change.rules,
                    lists: change.lists,
                },
                audit,
            ));
            version
        };
        self.tx.send_replace(version);
        Ok(version)
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, RepoError> {
        Ok(self
            .lock()
            .iter()
            .rev()
            .take(limit)
            .map(|(_, a)| a.clone())
            .collect())
    }

    fn watch(&self) -> Option<watch::Receiver<u64>> {
        Some(self.tx.subscribe())
    }
}

/// Brings `engine` to the repository's newest version if it is not there yet. Returns the
/// version applied, `None` if it was current. A version that does not compile is an error and
/// changes nothing.
pub async fn reload_once(
    engine: &RiskEngine,
    repo: &dyn RuleRepository,
) -> Result<Option<u64>, RepoError> {
    let current = repo.current_version().await?;
    if current == 0 || current == engine.rules_version() {
        return Ok(None);
    }
    let v = repo.load(current).await?;
    let set = compile_rules(&v.rules, v.version)?;
    // Lists first: a rule set that relies on a new list entry must not run without it.
    engine.set_lists(Lists::new(v.lists));
    engine.replace_rules(set);
    Ok(Some(current))
}

/// The running reloader: wake it, read its last error, stop it.
pub struct ReloaderHandle {
    notify: Arc<Notify>,
    last_error: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl ReloaderHandle {
    /// Reload now (after a save on this node, or on a database notification).
    pub fn notify(&self) {
        self.notify.notify_one();
    }

    /// The error of the last attempt, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// Polls `repo` every `every` (use ≤ 60 s) and whenever notified, applying new versions to
/// `engine`. Needs a Tokio runtime.
pub fn spawn_reloader(
    engine: Arc<RiskEngine>,
    repo: Arc<dyn RuleRepository>,
    every: Duration,
) -> ReloaderHandle {
    let notify = Arc::new(Notify::new());
    let last_error = Arc::new(Mutex::new(None));
    let (n, err) = (notify.clone(), last_error.clone());
    let task = tokio::spawn(async move {
        let mut watch = repo.watch();
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let outcome = reload_once(&engine, repo.as_ref()).await;
            let message = match outcome {
                Ok(Some(v)) => {
                    tracing::info!(version = v, "risk rules reloaded");
                    None
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::error!(error = %e, "risk rules not reloaded; keeping the current set");
                    Some(e.to_string())
                }
            };
            *err.lock().unwrap_or_else(|e| e.into_inner()) = message;
            let pushed = async {
                match watch.as_mut() {
                    Some(w) => {
                        if w.changed().await.is_err() {
                            // The repository is gone: stop listening, keep polling.
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => {}
                _ = n.notified() => {}
                _ = pushed => {}
            }
        }
    });
    ReloaderHandle {
        notify,
        last_error,
        task,
    }
}
