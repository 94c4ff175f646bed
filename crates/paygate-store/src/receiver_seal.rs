//! Profit-sharing receivers' personal accounts at rest (issue 7 §1): a `PERSONAL_OPENID` /
//! `PERSONAL_SUB_OPENID` receiver's openid is stored as its vault token (`ov_…`, HMAC-SM3,
//! the sealed openid in `openid_vault`), in `share_receivers.account` and in the lines of
//! `share_orders.receivers_json`. The token is deterministic, so the store's lookups and
//! compare-and-sets by account work unchanged on tokens; the store's API takes and returns
//! openids. Merchant receivers (`MERCHANT_ID`) are not personal and stay as they are.

use std::collections::HashMap;

use crate::StoreError;
use crate::sharing::{CreateShare, ShareLine, ShareOrderRecord, ShareReceiverRecord};
use crate::vault::{OpenidRow, SHARE_FINGERPRINT, Sealer};

fn personal(r#type: &str) -> bool {
    matches!(r#type, "PERSONAL_OPENID" | "PERSONAL_SUB_OPENID")
}

impl Sealer {
    /// The account as stored: a personal account's token (and its vault row), else as is.
    pub(crate) fn seal_account(
        &self,
        r#type: &str,
        account: &str,
    ) -> Result<(String, Option<OpenidRow>), StoreError> {
        if !personal(r#type) {
            return Ok((account.to_string(), None));
        }
        let (token, row) = self.seal_openid(Some(account))?;
        Ok((token.unwrap_or_else(|| account.to_string()), row))
    }

    pub(crate) fn seal_receiver(
        &self,
        r: &ShareReceiverRecord,
    ) -> Result<(ShareReceiverRecord, Option<OpenidRow>), StoreError> {
        let (account, row) = self.seal_account(&r.r#type, &r.account)?;
        Ok((
            ShareReceiverRecord {
                account,
                ..r.clone()
            },
            row,
        ))
    }

    pub(crate) fn seal_lines(
        &self,
        lines: &[ShareLine],
    ) -> Result<(Vec<ShareLine>, Vec<OpenidRow>), StoreError> {
        let mut rows = Vec::new();
        let mut sealed = Vec::with_capacity(lines.len());
        for l in lines {
            let (account, row) = self.seal_account(&l.r#type, &l.account)?;
            rows.extend(row);
            sealed.push(ShareLine {
                account,
                ..l.clone()
            });
        }
        Ok((sealed, rows))
    }

    pub(crate) fn seal_share(
        &self,
        o: &ShareOrderRecord,
    ) -> Result<(ShareOrderRecord, Vec<OpenidRow>), StoreError> {
        let (receivers, rows) = self.seal_lines(&o.receivers)?;
        let fingerprint = self.seal_text(SHARE_FINGERPRINT, &o.fingerprint)?;
        Ok((
            ShareOrderRecord {
                receivers,
                fingerprint,
                ..o.clone()
            },
            rows,
        ))
    }
}

/// Tokens to resolve in receivers and share orders read from the store.
pub(crate) fn receiver_tokens(list: &[ShareReceiverRecord]) -> Vec<String> {
    list.iter()
        .filter(|r| personal(&r.r#type))
        .map(|r| r.account.clone())
        .collect()
}

pub(crate) fn share_tokens<'a>(
    orders: impl IntoIterator<Item = &'a ShareOrderRecord>,
) -> Vec<String> {
    orders
        .into_iter()
        .flat_map(|o| o.receivers.iter())
        .filter(|l| personal(&l.r#type))
        .map(|l| l.account.clone())
        .collect()
}

fn open(openids: &HashMap<String, String>, r#type: &str, account: &mut String) {
    if personal(r#type) {
        if let Some(openid) = openids.get(account.as_str()) {
            *account = openid.clone();
        }
    }
}

pub(crate) fn open_receivers(
    openids: &HashMap<String, String>,
    mut list: Vec<ShareReceiverRecord>,
) -> Vec<ShareReceiverRecord> {
    for r in &mut list {
        open(openids, &r.r#type, &mut r.account);
    }
    list
}

pub(crate) fn open_share(
    sealer: &Sealer,
    openids: &HashMap<String, String>,
    mut o: ShareOrderRecord,
) -> Result<ShareOrderRecord, StoreError> {
    for l in &mut o.receivers {
        open(openids, &l.r#type, &mut l.account);
    }
    o.fingerprint = sealer.open_text(SHARE_FINGERPRINT, o.fingerprint)?;
    Ok(o)
}

/// The share order inside `Exists`, if any (to open it).
pub(crate) fn created_share(c: &CreateShare) -> Option<&ShareOrderRecord> {
    match c {
        CreateShare::Exists(o) => Some(o),
        _ => None,
    }
}

pub(crate) fn open_created(
    sealer: &Sealer,
    openids: &HashMap<String, String>,
    c: CreateShare,
) -> Result<CreateShare, StoreError> {
    Ok(match c {
        CreateShare::Exists(o) => CreateShare::Exists(Box::new(open_share(sealer, openids, *o)?)),
        other => other,
    })
}
