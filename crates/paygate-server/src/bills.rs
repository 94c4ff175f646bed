//! Merchant bills (§4.10, §7) built from paygate's own records: the trade bill
//! (`GET /v3/bill/tradebill`, ALL / SUCCESS / REFUND), the fund-flow bill
//! (`GET /v3/bill/fundflowbill`, BASIC) and the download (`GET /v3/billdownload/file`), for the
//! authenticated merchant only, byte-exact to WeChat's format through the wxpay bill writer.
//!
//! - A business day is the Beijing day (cut at 00:00 +08:00). Its bills exist once the day is
//!   closed: the daily job closes yesterday after `[bills] close_after` (Beijing, default
//!   10:00, as WeChat), catching up on days missed while no node ran; with the sandbox on,
//!   `POST /sandbox/v1/bills/close-day {"bill_date"}` closes any day at once. Before that,
//!   400 STATEMENT_CREATING; a closed day without the merchant's trades, 400 NO_STATEMENT_EXIST.
//! - Closing a day generates every merchant's bills of that day; a bill asked for and not yet
//!   generated (a merchant onboarded later, a close interrupted) is generated then. Either way
//!   a bill is generated once and kept (`Store::keep_bill_file`, first writer wins), so every
//!   download, on any node, serves the same bytes, whose SHA1 is the `hash_value`.
//! - The trade bill lists the day's payments (by success time) and refunds (by the time they
//!   were requested) with paygate's own transaction and refund ids; the fund-flow bill the
//!   money they moved, with a running balance from everything before the day.
//! - Download URLs are on the gateway's public base, signed-request protected like any V3
//!   call (the merchant named by the token only), answered unsigned as WeChat does; a token
//!   lives `download_ttl_s` and is kept in the store, so any node serves it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use paygate_core::error::{ApiError, ErrorCode, LOCATION_QUERY, decode_json};
use paygate_core::money::format_decimal_minor;
use paygate_core::timefmt::{BEIJING, beijing_date, bill_time_beijing, format_date, parse_date};
use paygate_store::bills::{
    BillCursor, BillDayRecord, BillDownloadRecord, BillFileRecord, is_billed_refund,
};
use paygate_store::ledger::refund_fee_share;
use paygate_store::{OrderRecord, RefundRecord, RefundState, Store, StoreError};
use paygate_wxpay::bill::fundflow::{EXPENSE, INCOME};
use paygate_wxpay::bill::{
    BillError, FundFlowBill, FundFlowRow, SummaryStyle, TradeBillRow, TradeBillType,
    TradeBillWriter, gzip, sha1_hex,
};
use paygate_wxpay::models::bills::{
    AccountType, BillResponse, FundFlowBillQuery, HashType, TarType, TradeBillQuery,
    TradeBillType as QueryBillType, parse_query, parse_query_validated,
};
use serde::Deserialize;
use time::{Date, OffsetDateTime, Time};

use crate::http::{ApiFail, ApiResult, AppState, Caller, Unsigned, internal, ok_json};

/// Rows read from the store per query while a bill is generated.
pub const BILL_PAGE_ROWS: u32 = 1_000;
/// Bills can be asked for up to three months back (§4.10).
pub const HISTORY_DAYS: i64 = 92;
/// Orders remembered while a day's refund rows are written (refunds of one order share it).
const ORDER_CACHE_MAX: usize = 4_096;

/// `[bills]`: when days close and how long download URLs live.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillsConfig {
    /// Beijing time `HH:MM` after which the daily job closes yesterday (WeChat: ~10:00).
    pub close_after: String,
    /// How often a node checks whether a day is due to close.
    pub check_interval_s: u64,
    /// Days before yesterday the job also closes if they were missed (no node running).
    pub catch_up_days: u32,
    /// How long a download URL works (the reference gives 30 s to 5 min).
    pub download_ttl_s: u64,
}

impl Default for BillsConfig {
    fn default() -> Self {
        Self {
            close_after: "10:00".into(),
            check_interval_s: 60,
            catch_up_days: 7,
            download_ttl_s: 300,
        }
    }
}

impl BillsConfig {
    /// `close_after` as a time of day; checked at start.
    pub fn close_after_time(&self) -> Result<Time, String> {
        let bad = || format!("[bills] close_after {:?}: want HH:MM", self.close_after);
        let (h, m) = self.close_after.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let (h, m) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        Time::from_hms(h, m, 0).map_err(|_| bad())
    }
}

/// The bills a merchant can ask for; the names are the store's `kind` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BillKind {
    TradeAll,
    TradeSuccess,
    TradeRefund,
    FundFlowBasic,
}

impl BillKind {
    pub const ALL: [BillKind; 4] = [
        BillKind::TradeAll,
        BillKind::TradeSuccess,
        BillKind::TradeRefund,
        BillKind::FundFlowBasic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BillKind::TradeAll => "TRADE_ALL",
            BillKind::TradeSuccess => "TRADE_SUCCESS",
            BillKind::TradeRefund => "TRADE_REFUND",
            BillKind::FundFlowBasic => "FUNDFLOW_BASIC",
        }
    }

    fn trade_type(self) -> Option<TradeBillType> {
        match self {
            BillKind::TradeAll => Some(TradeBillType::All),
            BillKind::TradeSuccess => Some(TradeBillType::Success),
            BillKind::TradeRefund => Some(TradeBillType::Refund),
            BillKind::FundFlowBasic => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BillBuildError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("bill writer: {0}")]
    Bill(#[from] BillError),
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v3/bill/tradebill", get(trade_bill))
        .route("/v3/bill/fundflowbill", get(fund_flow_bill))
        .route("/v3/billdownload/file", get(download))
}

/// `[from, to)`: the instants of a Beijing business day.
pub fn day_bounds(date: Date) -> (OffsetDateTime, OffsetDateTime) {
    let from = date.midnight().assume_offset(BEIJING);
    (from, from + time::Duration::DAY)
}

fn no_statement() -> ApiFail {
    ApiFail(ApiError::new(ErrorCode::NoStatementExist, "该日期无账单"))
}

/// The gateway's merchants are direct merchants: a `sub_mchid` asks for a provider's right.
fn refuse_sub_mchid(sub_mchid: Option<&String>) -> Result<(), ApiFail> {
    match sub_mchid {
        Some(_) => Err(ApiFail(ApiError::new(
            ErrorCode::NoAuth,
            "普通商户无服务商权限，请勿传入 sub_mchid",
        ))),
        None => Ok(()),
    }
}

async fn trade_bill(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let q: TradeBillQuery = parse_query_validated(&query.unwrap_or_default())?;
    refuse_sub_mchid(q.sub_mchid.as_ref())?;
    let date = q.date()?;
    let kind = match q.bill_type_or_default() {
        QueryBillType::All => BillKind::TradeAll,
        QueryBillType::Success => BillKind::TradeSuccess,
        QueryBillType::Refund => BillKind::TradeRefund,
        // Recharge coupons and the *_SPECIAL bills never occur in paygate.
        _ => {
            check_day(&app, date).await?;
            return Err(no_statement());
        }
    };
    answer(&app, &caller, date, kind, q.tar_type).await
}

async fn fund_flow_bill(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let q: FundFlowBillQuery = parse_query_validated(&query.unwrap_or_default())?;
    let date = q.date()?;
    if q.account_type_or_default() != AccountType::Basic {
        // paygate keeps merchants' money on their basic account only.
        check_day(&app, date).await?;
        return Err(no_statement());
    }
    answer(&app, &caller, date, BillKind::FundFlowBasic, q.tar_type).await
}

/// A bill exists for closed days at most three months old (§4.10).
async fn check_day(app: &AppState, date: Date) -> Result<(), ApiFail> {
    let today = beijing_date(OffsetDateTime::now_utc());
    if date > today {
        return Err(ApiFail(ApiError::param_in(
            LOCATION_QUERY,
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
        .store
        .bill_day(&format_date(date))
        .await
        .map_err(internal)?;
    if closed.is_none() {
        return Err(ApiFail(ApiError::new(
            ErrorCode::StatementCreating,
            "账单生成中，请于次日 10 点后再下载",
        )));
    }
    Ok(())
}

/// Finds (or generates) the bill and hands out a download URL for it.
async fn answer(
    app: &AppState,
    caller: &Caller,
    date: Date,
    kind: BillKind,
    tar: Option<TarType>,
) -> ApiResult {
    check_day(app, date).await?;
    let mchid = &caller.merchant.mchid;
    let file = bill(app.store.as_ref(), mchid, date, kind)
        .await
        .map_err(internal)?
        .ok_or_else(no_statement)?;
    let gzip_wanted = tar == Some(TarType::Gzip);
    let now = OffsetDateTime::now_utc();
    let ttl = time::Duration::seconds(
        i64::try_from(app.config.bills.download_ttl_s).unwrap_or(i64::MAX / 2_000),
    );
    let download = BillDownloadRecord {
        token: paygate_core::ids::token(32),
        mchid: mchid.clone(),
        bill_date: file.bill_date.clone(),
        kind: file.kind.clone(),
        gzip: gzip_wanted,
        expires_at: now + ttl,
    };
    app.store
        .insert_bill_download(&download, now)
        .await
        .map_err(internal)?;
    let tartype = if gzip_wanted { "&tartype=gzip" } else { "" };
    ok_json(&BillResponse {
        hash_type: HashType::Sha1,
        hash_value: file.sha1,
        download_url: format!(
            "{}v3/billdownload/file?token={}{tartype}",
            app.base_url, download.token
        ),
    })
}

#[derive(Deserialize)]
struct DownloadQuery {
    token: String,
    /// Informational: the token says whether the file is gzipped.
    #[serde(default)]
    #[allow(dead_code)]
    tartype: Option<String>,
}

/// The file itself: the request is signed like any other, the answer is not (§4.10).
async fn download(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let q: DownloadQuery = parse_query(&query.unwrap_or_default())?;
    let expired = || {
        ApiFail(ApiError::new(
            ErrorCode::InvalidRequest,
            "下载链接已失效，请重新申请账单",
        ))
    };
    let d = app
        .store
        .bill_download(&q.token)
        .await
        .map_err(internal)?
        .filter(|d| d.expires_at > OffsetDateTime::now_utc())
        .ok_or_else(expired)?;
    if d.mchid != caller.merchant.mchid {
        return Err(ApiFail(ApiError::new(ErrorCode::NoAuth, "无权下载该账单")));
    }
    let file = app
        .store
        .bill_file(&d.mchid, &d.bill_date, &d.kind)
        .await
        .map_err(internal)?
        .ok_or_else(expired)?;
    let (body, content_type) = if d.gzip {
        (gzip(&file.bytes), "application/x-gzip")
    } else {
        (file.bytes, "text/plain; charset=utf-8")
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.extensions_mut().insert(Unsigned);
    Ok(resp)
}

/// The merchant's bill of `kind` for `date`: the kept one, or generated now and kept. `None`
/// when the day has no rows for it. The day must be closed (the store refuses otherwise).
pub async fn bill(
    store: &dyn Store,
    mchid: &str,
    date: Date,
    kind: BillKind,
) -> Result<Option<BillFileRecord>, BillBuildError> {
    let bill_date = format_date(date);
    if let Some(file) = store.bill_file(mchid, &bill_date, kind.as_str()).await? {
        return Ok(Some(file));
    }
    let generated = match kind.trade_type() {
        Some(bill_type) => trade_bill_bytes(store, mchid, date, bill_type).await?,
        None => fund_flow_bill_bytes(store, mchid, date).await?,
    };
    let Some((bytes, row_count)) = generated else {
        return Ok(None);
    };
    let file = BillFileRecord {
        mchid: mchid.to_string(),
        bill_date,
        kind: kind.as_str().to_string(),
        sha1: sha1_hex(&bytes),
        bytes,
        row_count,
        created_at: OffsetDateTime::now_utc(),
    };
    Ok(Some(store.keep_bill_file(&file).await?))
}

/// One movement of a day, in time order: a payment (at its success time) or a refund (at
/// the time it was requested).
enum Entry {
    Payment(OrderRecord),
    Refund(RefundRecord),
}

/// The day's payments and refunds of one merchant, merged in time order from two keyset-paged
/// store queries (payments first at equal times), so a bill of any size is read in pages.
struct DayEntries<'a> {
    store: &'a dyn Store,
    mchid: &'a str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    payments: VecDeque<OrderRecord>,
    payments_after: Option<BillCursor>,
    payments_done: bool,
    refunds: VecDeque<RefundRecord>,
    refunds_after: Option<BillCursor>,
    refunds_done: bool,
}

impl<'a> DayEntries<'a> {
    fn new(
        store: &'a dyn Store,
        mchid: &'a str,
        date: Date,
        payments: bool,
        refunds: bool,
    ) -> Self {
        let (from, to) = day_bounds(date);
        Self {
            store,
            mchid,
            from,
            to,
            payments: VecDeque::new(),
            payments_after: None,
            payments_done: !payments,
            refunds: VecDeque::new(),
            refunds_after: None,
            refunds_done: !refunds,
        }
    }

    async fn refill(&mut self) -> Result<(), StoreError> {
        if self.payments.is_empty() && !self.payments_done {
            let page = self
                .store
                .paid_orders_between(
                    self.mchid,
                    self.from,
                    self.to,
                    self.payments_after.as_ref(),
                    BILL_PAGE_ROWS,
                )
                .await?;
            self.payments_done = page.len() < BILL_PAGE_ROWS as usize;
            self.payments_after = page.last().map(|o| BillCursor {
                at: paid_at(o),
                id: o.transaction_id.clone(),
            });
            self.payments.extend(page);
        }
        if self.refunds.is_empty() && !self.refunds_done {
            let page = self
                .store
                .billed_refunds_between(
                    self.mchid,
                    self.from,
                    self.to,
                    self.refunds_after.as_ref(),
                    BILL_PAGE_ROWS,
                )
                .await?;
            self.refunds_done = page.len() < BILL_PAGE_ROWS as usize;
            self.refunds_after = page.last().map(|r| BillCursor {
                at: r.created_at,
                id: r.refund_id.clone(),
            });
            self.refunds.extend(page);
        }
        Ok(())
    }

    async fn next(&mut self) -> Result<Option<Entry>, StoreError> {
        self.refill().await?;
        let payment_first = match (self.payments.front(), self.refunds.front()) {
            (None, None) => return Ok(None),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(o), Some(r)) => paid_at(o) <= r.created_at,
        };
        Ok(if payment_first {
            self.payments.pop_front().map(Entry::Payment)
        } else {
            self.refunds.pop_front().map(Entry::Refund)
        })
    }
}

/// The paid orders the store pages always have a success time; the creation time stands in
/// only to keep this total.
fn paid_at(o: &OrderRecord) -> OffsetDateTime {
    o.success_time.unwrap_or(o.created_at)
}

/// The fee paygate charged on the order: the one snapshotted on it when it was created.
fn fee_fen(order: &OrderRecord) -> i64 {
    order.pricing.fee_fen
}

/// 费率 as the bill writes it: `0.60%` (two decimals, more only when the rate has them).
pub fn fee_rate_text(rate_ppm: i64) -> String {
    // 1 ppm = 0.0001%: four decimals of a percent are exact.
    let (value, scale) = if rate_ppm % 100 == 0 {
        (rate_ppm / 100, 2)
    } else {
        (rate_ppm, 4)
    };
    format!("{}%", format_decimal_minor(value, scale))
}

/// The part of the order's fee given back with `refund`: the ledger's rule applied to the
/// order's billed refunds in order, so bills and the ledger agree to the fen.
fn refund_fee_fen(order: &OrderRecord, refunds: &[RefundRecord], refund: &RefundRecord) -> i64 {
    let (mut refunded_fen, mut given_fen) = (0i64, 0i64);
    for r in refunds.iter().filter(|r| is_billed_refund(r)) {
        refunded_fen += r.amount_fen;
        let share = refund_fee_share(
            fee_fen(order),
            order.total_fen,
            refunded_fen,
            given_fen,
            r.amount_fen,
        );
        if r.refund_id == refund.refund_id {
            return share;
        }
        given_fen += share;
    }
    0
}

/// A refunded order and its refunds, oldest first.
#[derive(Clone)]
struct Refunded {
    order: OrderRecord,
    refunds: Vec<RefundRecord>,
}

impl Refunded {
    fn fee_share(&self, refund: &RefundRecord) -> i64 {
        refund_fee_fen(&self.order, &self.refunds, refund)
    }
}

/// Orders of refunds, looked up once each while one bill is written.
struct Orders<'a> {
    store: &'a dyn Store,
    cache: HashMap<String, Refunded>,
}

impl<'a> Orders<'a> {
    fn new(store: &'a dyn Store) -> Self {
        Self {
            store,
            cache: HashMap::new(),
        }
    }

    async fn get(&mut self, transaction_id: &str) -> Result<Refunded, StoreError> {
        if let Some(o) = self.cache.get(transaction_id) {
            return Ok(o.clone());
        }
        let order = self
            .store
            .get_order_by_transaction_id(transaction_id)
            .await?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("refund of a missing order {transaction_id}"))
            })?;
        let refunds = self.store.refunds_of(transaction_id).await?;
        let refunded = Refunded { order, refunds };
        if self.cache.len() >= ORDER_CACHE_MAX {
            self.cache.clear();
        }
        self.cache
            .insert(transaction_id.to_string(), refunded.clone());
        Ok(refunded)
    }
}

async fn trade_bill_bytes(
    store: &dyn Store,
    mchid: &str,
    date: Date,
    bill_type: TradeBillType,
) -> Result<Option<(Vec<u8>, i64)>, BillBuildError> {
    let mut entries = DayEntries::new(
        store,
        mchid,
        date,
        bill_type != TradeBillType::Refund,
        bill_type != TradeBillType::Success,
    );
    let mut orders = Orders::new(store);
    let mut writer = TradeBillWriter::new(Vec::new(), bill_type, SummaryStyle::default())?;
    let mut rows = 0i64;
    while let Some(entry) = entries.next().await? {
        let row = match entry {
            Entry::Payment(order) => payment_row(&order),
            Entry::Refund(refund) => {
                let refunded = orders.get(&refund.transaction_id).await?;
                let fee_back_fen = refunded.fee_share(&refund);
                refund_row(&refund, &refunded.order, fee_back_fen, bill_type)
            }
        };
        writer.write_row(&row)?;
        rows += 1;
    }
    if rows == 0 {
        return Ok(None);
    }
    let (bytes, _summary) = writer.finish()?;
    Ok(Some((bytes, rows)))
}

/// `scene_info.device_id` of the merchant's prepay request (kept in the order's request
/// snapshot, `flow::RequestSnapshot`), if it sent one.
fn device_id(order: &OrderRecord) -> String {
    serde_json::from_str::<serde_json::Value>(&order.request_json)
        .ok()
        .and_then(|v| {
            v.pointer("/body/scene_info/device_id")?
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// The columns a payment row and a refund row of one order share.
fn order_columns(order: &OrderRecord) -> TradeBillRow {
    TradeBillRow {
        appid: order.appid.clone(),
        mchid: order.mchid.clone(),
        // paygate's merchants are direct merchants (§7: 0 for a direct merchant).
        sub_mchid: "0".into(),
        device_id: device_id(order),
        transaction_id: order.transaction_id.clone(),
        out_trade_no: order.out_trade_no.clone(),
        openid: order.payer_openid.clone().unwrap_or_default(),
        trade_type: order.trade_type.clone(),
        bank_type: order.bank_type.clone().unwrap_or_default(),
        currency: order.currency.clone(),
        goods_name: order.description.clone(),
        attach: order.attach.clone().unwrap_or_default(),
        fee_rate: fee_rate_text(order.pricing.fee_rate_ppm),
        ..TradeBillRow::default()
    }
}

pub fn payment_row(order: &OrderRecord) -> TradeBillRow {
    TradeBillRow {
        trade_time: bill_time_beijing(paid_at(order)),
        trade_state: "SUCCESS".into(),
        settlement_total_fen: order.total_fen,
        refund_id: "0".into(),
        out_refund_no: "0".into(),
        fee_milli_fen: fee_fen(order) * 1_000,
        order_total_fen: order.total_fen,
        ..order_columns(order)
    }
}

/// 退款状态 is the bill's own enum (§7), not the API's.
fn refund_status(state: RefundState) -> &'static str {
    match state {
        RefundState::Created | RefundState::Processing => "PROCESSING",
        RefundState::Success => "SUCCESS",
        RefundState::Abnormal => "CHANGE",
        RefundState::Closed => "FAIL",
    }
}

/// A refund's row; `fee_back_fen` is the part of the fee given back (shown negative).
pub fn refund_row(
    refund: &RefundRecord,
    order: &OrderRecord,
    fee_back_fen: i64,
    bill_type: TradeBillType,
) -> TradeBillRow {
    let in_refund_bill = bill_type == TradeBillType::Refund;
    TradeBillRow {
        // ALL bills date a refund row by the refund; REFUND bills by the payment (§7).
        trade_time: bill_time_beijing(if in_refund_bill {
            paid_at(order)
        } else {
            refund.created_at
        }),
        trade_state: "REFUND".into(),
        refund_apply_time: if in_refund_bill {
            bill_time_beijing(refund.created_at)
        } else {
            String::new()
        },
        refund_success_time: match (in_refund_bill, refund.state, refund.success_time) {
            (true, RefundState::Success, Some(t)) => bill_time_beijing(t),
            _ => String::new(),
        },
        refund_id: refund.refund_id.clone(),
        out_refund_no: refund.out_refund_no.clone(),
        refund_fen: refund.amount_fen,
        refund_type: "ORIGINAL".into(),
        refund_status: refund_status(refund.state).into(),
        refund_request_fen: refund.amount_fen,
        fee_milli_fen: -fee_back_fen * 1_000,
        ..order_columns(order)
    }
}

async fn fund_flow_bill_bytes(
    store: &dyn Store,
    mchid: &str,
    date: Date,
) -> Result<Option<(Vec<u8>, i64)>, BillBuildError> {
    let (from, _) = day_bounds(date);
    let before = store.merchant_flow_before(mchid, from).await?;
    let mut balance_fen =
        before.paid_fen - before.fee_fen - before.refund_fen + before.fee_refund_fen;
    let mut entries = DayEntries::new(store, mchid, date, true, true);
    let mut orders = Orders::new(store);
    let mut rows = Vec::new();
    while let Some(entry) = entries.next().await? {
        let fee_back_fen = match &entry {
            Entry::Refund(r) => orders.get(&r.transaction_id).await?.fee_share(r),
            Entry::Payment(_) => 0,
        };
        for (row, delta_fen) in fund_flow_rows(&entry, fee_back_fen) {
            balance_fen += delta_fen;
            rows.push(FundFlowRow { balance_fen, ..row });
        }
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let count = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    let bill = FundFlowBill::try_summarize(rows)?;
    Ok(Some((bill.to_csv(), count)))
}

/// The balance movements of one entry, each with its signed effect on the balance: a payment
/// and its fee; a refund and the part of the fee given back with it.
fn fund_flow_rows(entry: &Entry, fee_back_fen: i64) -> Vec<(FundFlowRow, i64)> {
    let row = |at, id: &str, seq: u8, name: &str, direction: &str, amount_fen, voucher: &str| {
        FundFlowRow {
            time: bill_time_beijing(at),
            transaction_id: id.to_string(),
            flow_id: format!("{id}{seq:02}"),
            biz_name: name.to_string(),
            biz_type: name.to_string(),
            direction: direction.to_string(),
            amount_fen,
            balance_fen: 0,
            applicant: "system".into(),
            remark: String::new(),
            voucher_no: voucher.to_string(),
        }
    };
    match entry {
        Entry::Payment(o) => {
            let at = paid_at(o);
            let mut out = vec![(
                row(
                    at,
                    &o.transaction_id,
                    1,
                    "交易",
                    INCOME,
                    o.total_fen,
                    &o.out_trade_no,
                ),
                o.total_fen,
            )];
            let fee = fee_fen(o);
            if fee > 0 {
                out.push((
                    row(
                        at,
                        &o.transaction_id,
                        2,
                        "扣除交易手续费",
                        EXPENSE,
                        fee,
                        &o.out_trade_no,
                    ),
                    -fee,
                ));
            }
            out
        }
        Entry::Refund(r) => {
            let mut refund = row(
                r.created_at,
                &r.refund_id,
                1,
                "退款",
                EXPENSE,
                r.amount_fen,
                &r.out_refund_no,
            );
            refund.remark = r.reason.clone().unwrap_or_default();
            let mut out = vec![(refund, -r.amount_fen)];
            if fee_back_fen > 0 {
                out.push((
                    row(
                        r.created_at,
                        &r.refund_id,
                        2,
                        "退还交易手续费",
                        INCOME,
                        fee_back_fen,
                        &r.out_refund_no,
                    ),
                    fee_back_fen,
                ));
            }
            out
        }
    }
}

/// Closes `date` for bills (false if it was closed already) and, when this call closed it,
/// generates every merchant's bills of the day so that later downloads find them made.
pub async fn close_day(
    store: &dyn Store,
    date: Date,
    closed_by: &str,
) -> Result<bool, BillBuildError> {
    let newly = store
        .close_bill_day(&BillDayRecord {
            bill_date: format_date(date),
            closed_at: OffsetDateTime::now_utc(),
            closed_by: closed_by.to_string(),
        })
        .await?;
    if newly {
        for merchant in store.list_merchants().await? {
            for kind in BillKind::ALL {
                // One merchant's failure must not keep the others' bills from being made; a
                // bill not made now is made when first asked for.
                if let Err(e) = bill(store, &merchant.mchid, date, kind).await {
                    tracing::warn!(mchid = %merchant.mchid, kind = kind.as_str(), error = %e,
                        "generating a bill at day close failed");
                }
            }
        }
    }
    Ok(newly)
}

/// The days the daily job should have closed by `now`: yesterday once `close_after` has
/// passed (else the day before), and `catch_up_days` before it.
pub fn days_due(now: OffsetDateTime, close_after: Time, catch_up_days: u32) -> Vec<Date> {
    let local = now.to_offset(BEIJING);
    let mut newest = local.date().previous_day();
    if local.time() < close_after {
        newest = newest.and_then(Date::previous_day);
    }
    let mut days = Vec::new();
    let mut day = newest;
    for _ in 0..=catch_up_days {
        let Some(d) = day else { break };
        days.push(d);
        day = d.previous_day();
    }
    days
}

/// The daily job: on every node, every `check_interval_s`; closing is idempotent in the store,
/// so the node that closes a day is the one that generates its bills.
pub fn spawn_closer(app: Arc<AppState>) {
    let close_after = match app.config.bills.close_after_time() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "bill day closer not started");
            return;
        }
    };
    tokio::spawn(async move {
        let every = Duration::from_secs(app.config.bills.check_interval_s.max(1));
        loop {
            for date in days_due(
                OffsetDateTime::now_utc(),
                close_after,
                app.config.bills.catch_up_days,
            ) {
                match close_day(app.store.as_ref(), date, "schedule").await {
                    Ok(true) => tracing::info!(bill_date = %format_date(date), "bill day closed"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "closing a bill day failed"),
                }
            }
            tokio::time::sleep(every).await;
        }
    });
}

#[derive(Deserialize)]
struct CloseDay {
    bill_date: String,
}

/// `POST /sandbox/v1/bills/close-day {"bill_date": "YYYY-MM-DD"}`: the day's bills now, as
/// the simulator does (real bills come the next morning).
pub async fn sandbox_close_day(State(app): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let req: CloseDay = decode_json(&body)?;
    let date = parse_date(&req.bill_date)
        .ok_or_else(|| ApiFail(ApiError::param("/bill_date", "must be YYYY-MM-DD")))?;
    let newly_closed = close_day(app.store.as_ref(), date, "sandbox")
        .await
        .map_err(internal)?;
    ok_json(&serde_json::json!({
        "bill_date": format_date(date),
        "closed": true,
        "newly_closed": newly_closed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime, time};

    #[test]
    fn a_business_day_is_cut_at_midnight_beijing() {
        let (from, to) = day_bounds(date!(2026 - 03 - 10));
        assert_eq!(from, datetime!(2026-03-09 16:00 UTC));
        assert_eq!(to, datetime!(2026-03-10 16:00 UTC));
        assert_eq!(beijing_date(from), date!(2026 - 03 - 10));
        assert_eq!(
            beijing_date(to - time::Duration::milliseconds(1)),
            date!(2026 - 03 - 10)
        );
        assert_eq!(beijing_date(to), date!(2026 - 03 - 11));
    }

    #[test]
    fn yesterday_is_due_only_after_the_close_hour_beijing() {
        let ten = time!(10:00);
        // 09:59 Beijing on the 10th: the 9th is not due yet, the 8th is.
        let due = days_due(datetime!(2026-03-10 01:59 UTC), ten, 2);
        assert_eq!(
            due,
            vec![
                date!(2026 - 03 - 08),
                date!(2026 - 03 - 07),
                date!(2026 - 03 - 06)
            ]
        );
        // 10:00 Beijing on the 10th: the 9th is.
        let due = days_due(datetime!(2026-03-10 02:00 UTC), ten, 0);
        assert_eq!(due, vec![date!(2026 - 03 - 09)]);
        // 00:30 Beijing on the 10th is still the 9th in UTC: the Beijing date decides.
        let due = days_due(datetime!(2026-03-09 16:30 UTC), time!(00:00), 0);
        assert_eq!(due, vec![date!(2026 - 03 - 09)]);
    }

    #[test]
    fn close_after_parses_strictly() {
        let c = |s: &str| BillsConfig {
            close_after: s.into(),
            ..BillsConfig::default()
        };
        assert_eq!(c("10:00").close_after_time(), Ok(time!(10:00)));
        assert_eq!(c("00:05").close_after_time(), Ok(time!(00:05)));
        for bad in ["10", "1:00", "24:00", "10:60", "ab:cd", "10:00:00"] {
            assert!(c(bad).close_after_time().is_err(), "{bad}");
        }
    }

    #[test]
    fn fee_rates_print_like_the_bill() {
        assert_eq!(fee_rate_text(6_000), "0.60%");
        assert_eq!(fee_rate_text(390_000), "39.00%");
        assert_eq!(fee_rate_text(0), "0.00%");
        assert_eq!(fee_rate_text(6_050), "0.6050%");
    }

    #[test]
    fn refund_rows_give_back_the_ledgers_share_of_the_fee() {
        let order: OrderRecord = serde_json::from_value(serde_json::json!({
            "transaction_id": "t1", "mchid": "m", "out_trade_no": "o", "appid": "a",
            "trade_type": "NATIVE", "state": "REFUND", "description": "d", "attach": null,
            "notify_url": "n", "total_fen": 1000, "currency": "CNY", "payer_openid": null,
            "time_expire": "2026-01-01T00:00:00Z", "fingerprint": "f", "request_json": "{}",
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "success_time": "2026-01-01T00:00:00Z", "bank_type": null, "version": 1,
            "pricing": {"fee_rate_ppm": 6000, "fee_fen": 6, "channel_cost_ppm": 0, "channel_cost_fen": 0}
        }))
        .unwrap();
        let refund =
            |id: &str, amount_fen: i64, state: &str, channel: Option<&str>| -> RefundRecord {
                serde_json::from_value(serde_json::json!({
                "refund_id": id, "mchid": "m", "out_refund_no": id, "transaction_id": "t1",
                "out_trade_no": "o", "attempt_id": "a1", "channel_id": "c", "state": state,
                "amount_fen": amount_fen, "total_fen": 1000, "currency": "CNY", "reason": null,
                "notify_url": "n", "fingerprint": "f", "request_json": "{}",
                "channel_refund_id": channel, "user_received_account": null, "funds_account": null,
                "error_code": null, "error_message": null, "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-01T00:00:00Z", "success_time": null, "last_polled_at": null,
                "version": 1
            }))
            .unwrap()
            };
        // Refunds of 400, a refused one (never billed), 300 and 300: the fee of 6 comes back as
        // floor(6*400/1000)=2, then floor(6*700/1000)-2=2, then 6-4=2: all of it, once.
        let refunds = vec![
            refund("r1", 400, "SUCCESS", Some("c1")),
            refund("r0", 500, "CLOSED", None),
            refund("r2", 300, "SUCCESS", Some("c2")),
            refund("r3", 300, "PROCESSING", Some("c3")),
        ];
        let shares: Vec<i64> = refunds
            .iter()
            .map(|r| refund_fee_fen(&order, &refunds, r))
            .collect();
        assert_eq!(shares, vec![2, 0, 2, 2]);
        let row = refund_row(&refunds[0], &order, shares[0], TradeBillType::All);
        assert_eq!(row.fee_milli_fen, -2_000);
        assert_eq!(row.fee_rate, "0.60%");
        assert_eq!(payment_row(&order).fee_milli_fen, 6_000);
    }

    #[test]
    fn refund_status_uses_the_bill_enum() {
        assert_eq!(refund_status(RefundState::Created), "PROCESSING");
        assert_eq!(refund_status(RefundState::Processing), "PROCESSING");
        assert_eq!(refund_status(RefundState::Success), "SUCCESS");
        assert_eq!(refund_status(RefundState::Abnormal), "CHANGE");
        assert_eq!(refund_status(RefundState::Closed), "FAIL");
    }
}
