//! The channel's bills for reconciliation (reference §4.10): apply for the trade bill or the
//! fund-flow bill of a day, download it (signed request, unsigned answer), gunzip it, and
//! check its SHA1 against the `hash_value` the apply step gave — over the uncompressed
//! bytes, as WeChat computes it. A day without trades is `Ok(None)` (`NO_STATEMENT_EXIST`).

use paygate_core::timefmt::format_date;
use paygate_wxpay::bill::{gunzip, sha1_hex};
use paygate_wxpay::models::bills::BillResponse;
use time::Date;

use crate::channel::WxChannel;
use crate::config::ChannelKind;
use crate::error::ChannelError;
use crate::transform::SubMerchant;

/// Largest uncompressed bill accepted: a day of ten million rows is ~2.7 GB; past this the
/// download is refused rather than exhausting memory.
pub const BILL_BYTES_MAX: usize = 4 << 30;

/// A downloaded, verified bill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillFile {
    /// The CSV, uncompressed (BOM included).
    pub bytes: Vec<u8>,
    /// Lowercase hex SHA1 of `bytes`, equal to the channel's `hash_value`.
    pub sha1: String,
}

impl WxChannel {
    /// The `bill_type=ALL` trade bill of `date` (a partner channel: of `sub`'s sub-merchant).
    pub async fn trade_bill(
        &self,
        date: Date,
        sub: &SubMerchant,
    ) -> Result<Option<BillFile>, ChannelError> {
        let mut target = format!(
            "/v3/bill/tradebill?bill_date={}&bill_type=ALL&tar_type=GZIP",
            format_date(date)
        );
        if self.kind() == ChannelKind::WxPartner {
            let sub_mchid = sub.sub_mchid.as_deref().ok_or_else(|| {
                ChannelError::config("a partner channel's trade bill needs the sub_mchid")
            })?;
            paygate_wxpay::rules::check_id("/sub_mchid", sub_mchid, 32)
                .map_err(ChannelError::local)?;
            target.push_str("&sub_mchid=");
            target.push_str(sub_mchid);
        }
        self.bill(&target).await
    }

    /// The BASIC account's fund-flow bill of `date`.
    pub async fn fund_flow_bill(&self, date: Date) -> Result<Option<BillFile>, ChannelError> {
        let target = format!(
            "/v3/bill/fundflowbill?bill_date={}&account_type=BASIC&tar_type=GZIP",
            format_date(date)
        );
        self.bill(&target).await
    }

    async fn bill(&self, target: &str) -> Result<Option<BillFile>, ChannelError> {
        let applied = match self.client().send("GET", target, b"").await {
            Ok(r) => r,
            Err(e) => {
                let e = ChannelError::from(e);
                if e.code() == Some("NO_STATEMENT_EXIST") {
                    return Ok(None);
                }
                return Err(e);
            }
        };
        let answer: BillResponse = serde_json::from_slice(&applied.body)
            .map_err(|e| ChannelError::unknown(format!("bill answer unreadable: {e}")))?;
        let body = self.client().download(&answer.download_url).await?;
        let bytes = if body.starts_with(&[0x1f, 0x8b]) {
            gunzip(&body, BILL_BYTES_MAX)
                .map_err(|e| ChannelError::unknown(format!("bill gzip: {e}")))?
        } else {
            body
        };
        let sha1 = sha1_hex(&bytes);
        if !sha1.eq_ignore_ascii_case(&answer.hash_value) {
            // A corrupted or swapped file: not to be reconciled against.
            return Err(ChannelError::unknown(format!(
                "bill hash mismatch: channel says {}, file is {sha1}",
                answer.hash_value
            )));
        }
        Ok(Some(BillFile { bytes, sha1 }))
    }
}
