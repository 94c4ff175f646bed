//! Bills (reference §4.10, §7): the trade bill, the fund-flow bill and the profit-sharing
//! bill of one Beijing business day, generated from the simulator's state, hashed (SHA1 of
//! the uncompressed bytes), optionally gzipped, and served from a short-lived download URL
//! on the simulator's own base. A day's bills exist once the day is over, or at once after
//! the sandbox's `close-day`; each is generated once and then never changes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use paygate_core::error::{ApiError, ErrorCode};
use paygate_core::money::format_decimal_minor;
use paygate_core::timefmt::{beijing_date, bill_time_beijing};
use paygate_wxpay::bill::fundflow::{EXPENSE, INCOME};
use paygate_wxpay::bill::{
    FundFlowBill, FundFlowRow, ProfitSharingBill, ProfitSharingBillRow, TradeBill, TradeBillRow,
    TradeBillType, gzip, sha1_hex,
};
use paygate_wxpay::models::bills::{
    AccountType, BillResponse, FundFlowBillQuery, HashType, ProfitSharingBillQuery, TarType,
    TradeBillQuery, TradeBillType as QueryBillType,
};
use time::Date;

use crate::api::{owner, parse_query};
use crate::server::{ApiFail, ApiResult, AppState, Caller, Unsigned, ok_json};
use crate::state::{Owner, Store};

/// How long a download URL works (the reference gives 30 s to 5 min).
const DOWNLOAD_TTL: Duration = Duration::from_secs(300);
/// Bills are kept for three months (§4.10).
const HISTORY_DAYS: i64 = 92;
const DOWNLOADS_MAX: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Trade(TradeBillKind),
    FundFlow,
    ProfitSharing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TradeBillKind {
    All,
    Success,
    Refund,
}

struct Download {
    mchid: String,
    bytes: Arc<Vec<u8>>,
    gzip: bool,
    expires: Instant,
}

#[derive(Default)]
pub struct BillCache {
    closed_days: HashSet<Date>,
    snapshots: HashMap<(Owner, Date, Kind), Arc<Vec<u8>>>,
    downloads: HashMap<String, Download>,
}

impl BillCache {
    pub fn close_day(&mut self, date: Date) {
        self.closed_days.insert(date);
    }
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v3/bill/tradebill", get(trade_bill))
        .route("/v3/bill/fundflowbill", get(fund_flow_bill))
        .route("/v3/profitsharing/bills", get(profit_sharing_bill))
        .route("/v3/billdownload/file", get(download))
}

/// A bill exists for days that are over (or closed by the sandbox) and at most three months old.
fn check_day(app: &AppState, date: Date) -> Result<(), ApiFail> {
    let today = beijing_date(app.clock.now());
    if date > today {
        return Err(ApiFail(ApiError::param_in(
            "query",
            "/bill_date",
            "不能是未来的日期",
        )));
    }
    if (today - date).whole_days() > HISTORY_DAYS {
        return Err(ApiFail(ApiError::new(
            ErrorCode::InvalidRequest,
            "只能下载三个月以内的账单",
        )));
    }
    let closed = app
        .bills
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .closed_days
        .contains(&date);
    if date == today && !closed {
        return Err(ApiFail(ApiError::new(
            ErrorCode::StatementCreating,
            "账单生成中，请于次日 10 点后再下载",
        )));
    }
    Ok(())
}

fn no_statement() -> ApiFail {
    ApiFail(ApiError::new(ErrorCode::NoStatementExist, "该日期无账单"))
}

/// Generates (once) and registers a download for the bill; answers `{hash_type, hash_value, download_url}`.
fn answer(
    app: &AppState,
    mchid: &str,
    key: (Owner, Date, Kind),
    generate: impl FnOnce(&Store) -> Option<Vec<u8>>,
    tar: Option<TarType>,
) -> ApiResult {
    let cached = app
        .bills
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .snapshots
        .get(&key)
        .cloned();
    let csv = match cached {
        Some(csv) => csv,
        None => {
            let csv = Arc::new(generate(&app.store()).ok_or_else(no_statement)?);
            let mut bills = app.bills.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(bills.snapshots.entry(key).or_insert(csv))
        }
    };
    let hash_value = sha1_hex(&csv);
    let gzip_wanted = tar == Some(TarType::Gzip);
    let bytes = if gzip_wanted {
        Arc::new(gzip(&csv))
    } else {
        csv
    };
    let token = crate::ids::token(32);
    {
        let mut bills = app.bills.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        bills.downloads.retain(|_, d| d.expires > now);
        if bills.downloads.len() >= DOWNLOADS_MAX {
            return Err(ApiFail(ApiError::of(ErrorCode::FrequencyLimited)));
        }
        bills.downloads.insert(
            token.clone(),
            Download {
                mchid: mchid.to_string(),
                bytes,
                gzip: gzip_wanted,
                expires: now + DOWNLOAD_TTL,
            },
        );
    }
    let tartype = if gzip_wanted { "&tartype=gzip" } else { "" };
    ok_json(&BillResponse {
        hash_type: HashType::Sha1,
        hash_value,
        download_url: format!(
            "{}v3/billdownload/file?token={token}{tartype}",
            app.base_url
        ),
    })
}

async fn trade_bill(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q: TradeBillQuery = parse_query(q)?;
    let date = q.date()?;
    let kind = match q.bill_type_or_default() {
        QueryBillType::All => TradeBillKind::All,
        QueryBillType::Success => TradeBillKind::Success,
        QueryBillType::Refund => TradeBillKind::Refund,
        _ => return Err(no_statement()),
    };
    let (owner, _) = owner(&app, &caller, q.sub_mchid.as_deref())?;
    check_day(&app, date)?;
    let fee_rate_bp = app
        .directory()
        .account(&caller.mchid)
        .map_or(60, |a| a.fee_rate_bp);
    let gen_owner = owner.clone();
    let bill_faults = app.faults_for(&caller.mchid).bill;
    answer(
        &app,
        &caller.mchid,
        (owner, date, Kind::Trade(kind)),
        |store| trade_rows(store, &gen_owner, date, kind, fee_rate_bp, &bill_faults),
        q.tar_type,
    )
}

async fn fund_flow_bill(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q: FundFlowBillQuery = parse_query(q)?;
    let date = q.date()?;
    check_day(&app, date)?;
    if q.account_type_or_default() != AccountType::Basic {
        return Err(no_statement());
    }
    let fee_rate_bp = app
        .directory()
        .account(&caller.mchid)
        .map_or(60, |a| a.fee_rate_bp);
    let mchid = caller.mchid.clone();
    let owner = Owner {
        mchid: caller.mchid.clone(),
        sub_mchid: None,
    };
    answer(
        &app,
        &caller.mchid,
        (owner, date, Kind::FundFlow),
        |store| fund_flow_rows(store, &mchid, date, fee_rate_bp),
        q.tar_type,
    )
}

async fn profit_sharing_bill(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q: ProfitSharingBillQuery = parse_query(q)?;
    let date = q.date()?;
    let (owner, _) = owner(&app, &caller, q.sub_mchid.as_deref())?;
    check_day(&app, date)?;
    let gen_owner = owner.clone();
    answer(
        &app,
        &caller.mchid,
        (owner, date, Kind::ProfitSharing),
        |store| profit_sharing_rows(store, &gen_owner, date),
        q.tar_type,
    )
}

/// The file itself: the request is signed like any other, the answer is not (§4.10).
async fn download(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let token = q
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("token=").map(str::to_string))
        .ok_or_else(|| ApiFail(ApiError::param_in("query", "/token", "token 必填")))?;
    let (bytes, is_gzip) = {
        let bills = app.bills.lock().unwrap_or_else(|p| p.into_inner());
        let d = bills
            .downloads
            .get(&token)
            .filter(|d| d.expires > Instant::now())
            .ok_or_else(|| {
                ApiFail(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "下载链接已失效，请重新申请账单",
                ))
            })?;
        if d.mchid != caller.mchid {
            return Err(ApiFail(ApiError::new(ErrorCode::NoAuth, "无权下载该账单")));
        }
        (Arc::clone(&d.bytes), d.gzip)
    };
    let mut resp = Response::new(Body::from(bytes.as_ref().clone()));
    *resp.status_mut() = StatusCode::OK;
    let content_type = if is_gzip {
        "application/x-gzip"
    } else {
        "text/plain; charset=utf-8"
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.extensions_mut().insert(Unsigned);
    Ok(resp)
}

fn fee_fen(total_fen: i64, fee_rate_bp: u32) -> i64 {
    // Rounded half up to the fen, as the bill's 0.01000 fee on a 0.03 yuan order shows.
    (total_fen * i64::from(fee_rate_bp) + 5_000) / 10_000
}

fn fee_rate_text(fee_rate_bp: u32) -> String {
    format!("{}%", format_decimal_minor(i64::from(fee_rate_bp), 2))
}

fn trade_rows(
    store: &Store,
    owner: &Owner,
    date: Date,
    kind: TradeBillKind,
    fee_rate_bp: u32,
    faults: &crate::faults::BillFaults,
) -> Option<Vec<u8>> {
    let mut rows: Vec<(time::OffsetDateTime, TradeBillRow)> = Vec::new();
    let sub = |o: &Owner| o.sub_mchid.clone().unwrap_or_else(|| "0".to_string());
    for order in store.orders.values().filter(|o| &o.input.owner == owner) {
        let Some(paid) = order.success_time else {
            continue;
        };
        // A day-cut fault books the payment at the next Beijing midnight instead.
        let paid = faults.listed_at(&order.input.out_trade_no, paid);
        if kind == TradeBillKind::Refund || beijing_date(paid) != date {
            continue;
        }
        let fee = fee_fen(order.input.total_fen, fee_rate_bp);
        let row = TradeBillRow {
            trade_time: bill_time_beijing(paid),
            appid: order
                .input
                .sub_appid
                .clone()
                .unwrap_or_else(|| order.input.appid.clone()),
            mchid: owner.mchid.clone(),
            sub_mchid: sub(owner),
            device_id: order.input.device_id.clone().unwrap_or_default(),
            transaction_id: order.transaction_id.clone(),
            out_trade_no: order.input.out_trade_no.clone(),
            openid: order.payer_openid.clone().unwrap_or_default(),
            trade_type: order.input.trade.as_str().to_string(),
            trade_state: "SUCCESS".into(),
            bank_type: order.bank_type.clone().unwrap_or_default(),
            currency: order.input.currency.clone(),
            settlement_total_fen: order.input.total_fen,
            refund_id: "0".into(),
            out_refund_no: "0".into(),
            goods_name: order.input.description.clone(),
            attach: order.input.attach.clone().unwrap_or_default(),
            fee_milli_fen: fee * 1000,
            fee_rate: fee_rate_text(fee_rate_bp),
            order_total_fen: order.input.total_fen,
            ..TradeBillRow::default()
        };
        rows.extend(faults.apply(row).into_iter().map(|r| (paid, r)));
    }
    for refund in store.refunds.values().filter(|r| &r.owner == owner) {
        // A day-cut fault books the refund at the next Beijing midnight instead; its row
        // keeps the time it was asked for.
        let listed = faults.refund_listed_at(&refund.out_refund_no, refund.created_at);
        if kind == TradeBillKind::Success || beijing_date(listed) != date {
            continue;
        }
        let Some(order) = store
            .orders
            .get(&(owner.mchid.clone(), refund.out_trade_no.clone()))
        else {
            continue;
        };
        let status = match refund.state {
            paygate_wxpay::models::refunds::RefundStatus::Success => "SUCCESS",
            paygate_wxpay::models::refunds::RefundStatus::Processing => "PROCESSING",
            paygate_wxpay::models::refunds::RefundStatus::Abnormal => "CHANGE",
            paygate_wxpay::models::refunds::RefundStatus::Closed => "FAIL",
        };
        rows.push((
            listed,
            TradeBillRow {
                trade_time: bill_time_beijing(listed),
                appid: order
                    .input
                    .sub_appid
                    .clone()
                    .unwrap_or_else(|| order.input.appid.clone()),
                mchid: owner.mchid.clone(),
                sub_mchid: sub(owner),
                device_id: order.input.device_id.clone().unwrap_or_default(),
                transaction_id: order.transaction_id.clone(),
                out_trade_no: order.input.out_trade_no.clone(),
                openid: order.payer_openid.clone().unwrap_or_default(),
                trade_type: order.input.trade.as_str().to_string(),
                trade_state: "REFUND".into(),
                bank_type: order.bank_type.clone().unwrap_or_default(),
                currency: order.input.currency.clone(),
                refund_apply_time: if kind == TradeBillKind::Refund {
                    bill_time_beijing(refund.created_at)
                } else {
                    String::new()
                },
                refund_success_time: match (kind, refund.success_time) {
                    (TradeBillKind::Refund, Some(t)) => bill_time_beijing(t),
                    _ => String::new(),
                },
                refund_id: refund.refund_id.clone(),
                out_refund_no: refund.out_refund_no.clone(),
                refund_fen: refund.refund_fen,
                refund_type: "ORIGINAL".into(),
                refund_status: status.into(),
                goods_name: order.input.description.clone(),
                attach: order.input.attach.clone().unwrap_or_default(),
                fee_rate: fee_rate_text(fee_rate_bp),
                refund_request_fen: refund.refund_fen,
                ..TradeBillRow::default()
            },
        ));
    }
    if rows.is_empty() {
        return None;
    }
    rows.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.out_trade_no.cmp(&b.1.out_trade_no))
    });
    let bill_type = match kind {
        TradeBillKind::All => TradeBillType::All,
        TradeBillKind::Success => TradeBillType::Success,
        TradeBillKind::Refund => TradeBillType::Refund,
    };
    Some(TradeBill::summarize(bill_type, rows.into_iter().map(|(_, r)| r).collect()).to_csv())
}

/// Balance movements of the signing account (a provider's bill carries its sub-merchants'
/// movements too: a sandbox simplification, as sub-merchant fund flow has its own API).
fn fund_flow_rows(store: &Store, mchid: &str, date: Date, fee_rate_bp: u32) -> Option<Vec<u8>> {
    let mut moves: Vec<(time::OffsetDateTime, FundFlowRow, i64)> = Vec::new();
    let row = |t,
               id: &str,
               flow: String,
               name: &str,
               dir: &str,
               amount: i64,
               remark: String,
               voucher: String| FundFlowRow {
        time: bill_time_beijing(t),
        transaction_id: id.to_string(),
        flow_id: flow,
        biz_name: name.to_string(),
        biz_type: name.to_string(),
        direction: dir.to_string(),
        amount_fen: amount,
        balance_fen: 0,
        applicant: "system".into(),
        remark,
        voucher_no: voucher,
    };
    for order in store
        .orders
        .values()
        .filter(|o| o.input.owner.mchid == mchid)
    {
        let Some(paid) = order.success_time else {
            continue;
        };
        let total = order.input.total_fen;
        let fee = fee_fen(total, fee_rate_bp);
        moves.push((
            paid,
            row(
                paid,
                &order.transaction_id,
                format!("{}01", order.transaction_id),
                "交易",
                INCOME,
                total,
                String::new(),
                order.input.out_trade_no.clone(),
            ),
            total,
        ));
        if fee > 0 {
            moves.push((
                paid,
                row(
                    paid,
                    &order.transaction_id,
                    format!("{}02", order.transaction_id),
                    "扣除交易手续费",
                    EXPENSE,
                    fee,
                    String::new(),
                    order.input.out_trade_no.clone(),
                ),
                -fee,
            ));
        }
    }
    for refund in store.refunds.values().filter(|r| r.owner.mchid == mchid) {
        let t = refund.created_at;
        moves.push((
            t,
            row(
                t,
                &refund.refund_id,
                format!("{}01", refund.refund_id),
                "退款",
                EXPENSE,
                refund.refund_fen,
                refund.reason.clone().unwrap_or_default(),
                refund.out_refund_no.clone(),
            ),
            -refund.refund_fen,
        ));
    }
    moves.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.flow_id.cmp(&b.1.flow_id)));
    let mut balance = 0i64;
    let mut rows = Vec::new();
    for (t, mut r, delta) in moves {
        balance += delta;
        if beijing_date(t) == date {
            r.balance_fen = balance;
            rows.push(r);
        }
    }
    (!rows.is_empty()).then(|| FundFlowBill::summarize(rows).to_csv())
}

fn profit_sharing_rows(store: &Store, owner: &Owner, date: Date) -> Option<Vec<u8>> {
    let mut rows: Vec<(time::OffsetDateTime, ProfitSharingBillRow)> = Vec::new();
    let split_mchid = owner
        .sub_mchid
        .clone()
        .unwrap_or_else(|| owner.mchid.clone());
    for share in store.shares.values().filter(|s| &s.owner == owner) {
        let order_total = store
            .by_transaction_id
            .get(&share.transaction_id)
            .and_then(|k| store.orders.get(k))
            .map_or(0, |o| o.input.total_fen);
        for r in share
            .receivers
            .iter()
            .filter(|r| beijing_date(r.create_time) == date)
        {
            rows.push((
                r.create_time,
                ProfitSharingBillRow {
                    time: bill_time_beijing(r.create_time),
                    initiator_mchid: owner.mchid.clone(),
                    mchid: split_mchid.clone(),
                    transaction_id: share.transaction_id.clone(),
                    order_id: share.order_id.clone(),
                    detail_id: r.detail_id.clone(),
                    out_order_no: share.out_order_no.clone(),
                    order_amount_fen: order_total,
                    receiver: r.account.clone(),
                    amount_fen: r.amount_fen,
                    biz_type: "分账".into(),
                    status: serde_json::to_value(r.result)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    remark: r.description.clone(),
                },
            ));
        }
    }
    for ret in store
        .returns
        .values()
        .filter(|r| &r.owner == owner && beijing_date(r.create_time) == date)
    {
        rows.push((
            ret.create_time,
            ProfitSharingBillRow {
                time: bill_time_beijing(ret.create_time),
                initiator_mchid: owner.mchid.clone(),
                mchid: split_mchid.clone(),
                transaction_id: String::new(),
                order_id: ret.return_id.clone(),
                detail_id: ret.return_id.clone(),
                out_order_no: ret.out_return_no.clone(),
                order_amount_fen: 0,
                receiver: ret.return_mchid.clone(),
                amount_fen: ret.amount_fen,
                biz_type: "回退".into(),
                status: serde_json::to_value(ret.result)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                remark: ret.description.clone(),
            },
        ));
    }
    if rows.is_empty() {
        return None;
    }
    rows.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.detail_id.cmp(&b.1.detail_id))
    });
    Some(ProfitSharingBill::new(rows.into_iter().map(|(_, r)| r).collect()).to_csv())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::BillFaults;
    use crate::state::{PrepayInput, RefundInput};
    use paygate_wxpay::models::payments::TradeType;
    use time::macros::{date, datetime};

    /// A store with one order paid at 23:59:50 and refunded in part at 23:59:58 (Beijing)
    /// on 2026-11-28.
    fn late_refund() -> (Store, Owner, String) {
        let owner = Owner {
            mchid: "1900000109".into(),
            sub_mchid: None,
        };
        let mut store = Store::default();
        let at = datetime!(2026-11-28 15:59:40 UTC);
        store
            .prepay(
                PrepayInput {
                    owner: owner.clone(),
                    appid: "wxd678efh567hg6787".into(),
                    sub_appid: None,
                    trade: TradeType::Native,
                    out_trade_no: "pay-1".into(),
                    description: "day cut".into(),
                    attach: None,
                    notify_url: "https://merchant.invalid/notify".into(),
                    total_fen: 1_000,
                    currency: "CNY".into(),
                    time_expire: None,
                    openid: None,
                    sp_openid: None,
                    sub_openid: None,
                    profit_sharing: false,
                    device_id: None,
                    fingerprint: "f".into(),
                },
                at,
            )
            .unwrap();
        store
            .pay(
                &owner,
                "pay-1",
                true,
                None,
                datetime!(2026-11-28 15:59:50 UTC),
            )
            .unwrap();
        let refund = store
            .create_refund(
                RefundInput {
                    owner: owner.clone(),
                    transaction_id: None,
                    out_trade_no: Some("pay-1".into()),
                    out_refund_no: "rf-late".into(),
                    reason: None,
                    notify_url: None,
                    refund_fen: 300,
                    total_fen: 1_000,
                    currency: "CNY".into(),
                    funds_account: None,
                },
                false,
                time::Duration::seconds(1),
                datetime!(2026-11-28 15:59:58 UTC),
            )
            .unwrap();
        (store, owner, refund.out_refund_no)
    }

    fn bill(
        store: &Store,
        owner: &Owner,
        date: Date,
        kind: TradeBillKind,
        faults: &BillFaults,
    ) -> Option<TradeBill> {
        trade_rows(store, owner, date, kind, 60, faults).map(|csv| TradeBill::parse(&csv).unwrap())
    }

    #[test]
    fn a_refund_booked_after_the_cut_is_in_the_next_days_bill_only() {
        let (store, owner, out_refund_no) = late_refund();
        let (day, next) = (date!(2026 - 11 - 28), date!(2026 - 11 - 29));

        // Without the fault both rows are in the day's bill.
        let clean = bill(
            &store,
            &owner,
            day,
            TradeBillKind::All,
            &BillFaults::default(),
        )
        .unwrap();
        assert_eq!(clean.rows.len(), 2);
        assert_eq!(clean.summary.refund_fen, 300);

        let faults = BillFaults {
            refund_next_day: vec![out_refund_no.clone()],
            ..BillFaults::default()
        };
        // The day keeps the payment, loses the refund; its summary follows the rows.
        let d = bill(&store, &owner, day, TradeBillKind::All, &faults).unwrap();
        assert_eq!(d.rows.len(), 1);
        assert_eq!(d.rows[0].trade_state, "SUCCESS");
        assert_eq!(
            (
                d.summary.trade_count,
                d.summary.settlement_total_fen,
                d.summary.refund_fen
            ),
            (1, 1_000, 0)
        );
        assert!(bill(&store, &owner, day, TradeBillKind::Refund, &faults).is_none());

        // The next day has the refund row alone, booked at midnight, asked for the day before.
        let n = bill(&store, &owner, next, TradeBillKind::All, &faults).unwrap();
        assert_eq!(n.rows.len(), 1);
        let row = &n.rows[0];
        assert_eq!(
            (
                row.trade_state.as_str(),
                row.out_refund_no.as_str(),
                row.refund_fen
            ),
            ("REFUND", out_refund_no.as_str(), 300)
        );
        assert_eq!(row.trade_time, "2026-11-29 00:00:00");
        assert_eq!(n.summary.refund_fen, 300);
        let r = bill(&store, &owner, next, TradeBillKind::Refund, &faults).unwrap();
        assert_eq!(r.rows[0].refund_apply_time, "2026-11-28 23:59:58");
        assert!(bill(&store, &owner, next, TradeBillKind::Success, &faults).is_none());

        // Naming the refund in the payments' list moves nothing.
        let wrong_list = BillFaults {
            next_day: vec![out_refund_no],
            ..BillFaults::default()
        };
        let d = bill(&store, &owner, day, TradeBillKind::All, &wrong_list).unwrap();
        assert_eq!(d.rows.len(), 2);
    }

    #[test]
    fn fees_round_half_up_to_the_fen() {
        assert_eq!(
            fee_fen(3, 3900),
            1,
            "0.03 yuan at 39% is 0.0117 → 0.01 (the WeChat sample)"
        );
        assert_eq!(fee_fen(100, 60), 1, "0.6 fen rounds up");
        assert_eq!(fee_fen(83, 60), 0, "0.498 fen rounds down");
        assert_eq!(fee_rate_text(60), "0.60%");
    }
}
