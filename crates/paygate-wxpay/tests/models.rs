//! The request models against bodies as real SDKs write them: the official §9.1 JSAPI body,
//! Go (`json.Encoder`: HTML escapes, `null` for nil pointers, trailing newline), Python
//! (`json.dumps`: ", " / ": " separators, `\uXXXX` escapes), PHP (escaped slashes), Java Gson
//! (`\u003d`); and the rejections every server must make without panicking.

// Test helpers outside #[test] functions unwrap too; tests may.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use paygate_core::error::{ApiError, ErrorCode};
use paygate_wxpay::models::payments::{PartnerPrepayRequest, PrepayRequest, TradeType};
use paygate_wxpay::models::profitsharing::ProfitSharingOrderRequest;
use paygate_wxpay::models::refunds::RefundRequest;
use paygate_wxpay::rules::parse_json;
use proptest::prelude::*;

/// The signed body of reference §9.1, byte for byte.
const OFFICIAL_JSAPI: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1900007291","description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/pay.php","amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}"#;

fn field(e: &ApiError) -> String {
    let detail = e.detail.as_ref().expect("a field error has a detail");
    detail["field"]
        .as_str()
        .expect("detail.field is a string")
        .to_owned()
}

fn assert_param_error(body: &[u8], pointer: &str) -> ApiError {
    let e = parse_json::<PrepayRequest>(body).expect_err("the body must be rejected");
    assert_eq!(e.code, ErrorCode::ParamError, "{e}");
    assert_eq!(e.status(), 400);
    assert_eq!(field(&e), pointer, "{e}");
    // The wire body is a V3 error body a client can read back.
    assert_eq!(ApiError::from_body(400, &e.to_body()).as_ref(), Some(&e));
    e
}

#[test]
fn official_jsapi_body_parses_and_reserializes_byte_for_byte() {
    let req: PrepayRequest = parse_json(OFFICIAL_JSAPI.as_bytes()).unwrap();
    req.validate_for(TradeType::Jsapi).unwrap();
    assert_eq!(req.description, "Image形象店-深圳腾大-QQ公仔");
    assert_eq!(req.amount.total, 100);
    assert_eq!(
        req.payer.as_ref().unwrap().openid,
        "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    );
    assert_eq!(serde_json::to_string(&req).unwrap(), OFFICIAL_JSAPI);
}

#[test]
fn go_encoder_body_is_accepted() {
    // json.Encoder: struct order, HTML-escaped "&" and "<", nil pointers as null, RFC3339Nano
    // times, and the newline Encode appends.
    let body = "{\"appid\":\"wxd678efh567hg6787\",\"mchid\":\"1900007291\",\"description\":\"Q\\u0026A \\u003cgift\\u003e\",\"out_trade_no\":\"go_1217752501201407\",\"time_expire\":\"2018-06-08T10:34:56.123456789+08:00\",\"notify_url\":\"https://www.weixin.qq.com/wxpay/pay.php\",\"amount\":{\"total\":100,\"currency\":\"CNY\"},\"payer\":null,\"detail\":null,\"scene_info\":null,\"settle_info\":{\"profit_sharing\":true}}\n";
    let req: PrepayRequest = parse_json(body.as_bytes()).unwrap();
    assert_eq!(req.description, "Q&A <gift>");
    assert_eq!(req.payer, None);
    assert_eq!(req.settle_info.as_ref().unwrap().profit_sharing, Some(true));
    let at = req.time_expire_at().unwrap().unwrap();
    assert_eq!(at.nanosecond(), 123_456_789);
}

#[test]
fn go_sorted_map_body_with_sorted_keys_is_accepted() {
    // A Go client building the body from a map[string]interface{} gets sorted keys.
    let body = "{\"amount\":{\"currency\":\"CNY\",\"total\":1},\"appid\":\"wxd678efh567hg6787\",\"description\":\"test\",\"mchid\":\"1900007291\",\"notify_url\":\"https://example.com/notify\",\"out_trade_no\":\"sorted_123456\",\"payer\":{\"openid\":\"o1\"}}\n";
    let req: PrepayRequest = parse_json(body.as_bytes()).unwrap();
    req.validate_for(TradeType::Jsapi).unwrap();
    assert_eq!(req.out_trade_no, "sorted_123456");
}

#[test]
fn python_json_dumps_body_is_accepted() {
    // json.dumps(data): ", " and ": " separators, ensure_ascii escapes for Chinese.
    let body = r#"{"appid": "wxd678efh567hg6787", "mchid": "1900007291", "description": "\u6df1\u5733\u817e\u5927-QQ\u516c\u4ed4", "out_trade_no": "py1217752501201407", "notify_url": "https://www.weixin.qq.com/wxpay/pay.php", "amount": {"total": 1, "currency": "CNY"}, "scene_info": {"payer_client_ip": "14.23.150.211", "h5_info": {"type": "Wap"}}}"#;
    let req: PrepayRequest = parse_json(body.as_bytes()).unwrap();
    req.validate_for(TradeType::Mweb).unwrap();
    assert_eq!(req.description, "深圳腾大-QQ公仔");
}

#[test]
fn php_and_java_escapes_are_accepted() {
    // PHP json_encode escapes "/", Gson escapes "=" as \u003d.
    let body = r#"{"appid":"wxd678efh567hg6787","mchid":"1900007291","description":"a\u003db","out_trade_no":"php_123456","notify_url":"https:\/\/example.com\/wx\/notify","amount":{"total":1}}"#;
    let req: PrepayRequest = parse_json(body.as_bytes()).unwrap();
    assert_eq!(req.notify_url, "https://example.com/wx/notify");
    assert_eq!(req.description, "a=b");
    assert_eq!(req.amount.currency, None);
}

#[test]
fn nulls_and_unknown_fields_are_tolerated() {
    let body = r#"{"appid":"wxd678efh567hg6787","mchid":"1900007291","description":"d","out_trade_no":"absent_123",
        "time_expire":null,"attach":null,"notify_url":"https://example.com/n","goods_tag":null,"limit_pay":null,
        "support_fapiao":null,"amount":{"total":1,"currency":null,"extra":1},"payer":{"openid":"o","nick":"x"},
        "detail":{"cost_price":null,"goods_detail":null},"scene_info":null,"settle_info":null,
        "brand_new_field":{"nested":[1,2,{"x":null}]}}"#;
    let req: PrepayRequest = parse_json(body.as_bytes()).unwrap();
    assert_eq!(req.time_expire, None);
    assert_eq!(req.attach, None);
    // Absent values stay absent when re-serialized: no "null", no "".
    let again = serde_json::to_string(&req).unwrap();
    assert!(
        !again.contains("null") && !again.contains("\"\""),
        "{again}"
    );
    assert!(!again.contains("brand_new_field"));
}

#[test]
fn partner_go_body_is_accepted() {
    let body = "{\"sp_appid\":\"wx8888888888888888\",\"sp_mchid\":\"1230000109\",\"sub_appid\":\"wxd678efh567hg6999\",\"sub_mchid\":\"1900000109\",\"description\":\"Image形象店-深圳腾大-QQ公仔\",\"out_trade_no\":\"1217752501201407033233368018\",\"time_expire\":\"2018-06-08T10:34:56Z\",\"attach\":\"自定义数据\",\"notify_url\":\"https://www.weixin.qq.com/wxpay/pay.php\",\"goods_tag\":\"WXG\",\"limit_pay\":[\"no_credit\"],\"support_fapiao\":false,\"amount\":{\"total\":100,\"currency\":\"CNY\"},\"payer\":{\"sub_openid\":\"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o\"},\"detail\":{\"cost_price\":608800,\"invoice_id\":\"微信123\",\"goods_detail\":[{\"merchant_goods_id\":\"1246464644\",\"wechatpay_goods_id\":\"1001\",\"goods_name\":\"iPhoneX 256G\",\"quantity\":1,\"unit_price\":528800}]},\"scene_info\":{\"payer_client_ip\":\"14.23.150.211\",\"device_id\":\"013467007045764\",\"store_info\":{\"id\":\"0001\",\"name\":\"腾讯大厦分店\",\"area_code\":\"440305\",\"address\":\"广东省深圳市南山区科技中一道10000号\"}},\"settle_info\":{\"profit_sharing\":false}}\n";
    let req: PartnerPrepayRequest = parse_json(body.as_bytes()).unwrap();
    req.validate_for(TradeType::Jsapi).unwrap();
    let goods = &req.detail.as_ref().unwrap().goods_detail.as_ref().unwrap()[0];
    assert_eq!(goods.unit_price, 528800);
}

#[test]
fn refund_and_split_bodies_from_python_are_accepted() {
    let refund = r#"{"out_refund_no": "R20230101", "amount": {"refund": 1, "total": 1, "currency": "CNY"}, "out_trade_no": "py1217752501201407", "reason": "\u5546\u54c1\u5df2\u552e\u5b8c"}"#;
    let r: RefundRequest = parse_json(refund.as_bytes()).unwrap();
    assert_eq!(r.reason.as_deref(), Some("商品已售完"));
    let split = r#"{"appid": "wx8888888888888888", "transaction_id": "4208450740201411110007820472", "out_order_no": "P20150806125346", "receivers": [{"type": "PERSONAL_OPENID", "account": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "amount": 888, "description": "\u5206\u7ed9\u5546\u6237A"}], "unfreeze_unsplit": true}"#;
    let s: ProfitSharingOrderRequest = parse_json(split.as_bytes()).unwrap();
    assert_eq!(s.receivers[0].description, "分给商户A");
}

fn official_with(pointer: &str, value: serde_json::Value) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_str(OFFICIAL_JSAPI).unwrap();
    match v.pointer_mut(pointer) {
        Some(slot) => *slot = value,
        None => {
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let parent = if parent.is_empty() {
                &mut v
            } else {
                v.pointer_mut(parent).unwrap()
            };
            parent
                .as_object_mut()
                .unwrap()
                .insert(key.to_owned(), value);
        }
    }
    serde_json::to_vec(&v).unwrap()
}

fn official_without(pointer: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_str(OFFICIAL_JSAPI).unwrap();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = if parent.is_empty() {
        &mut v
    } else {
        v.pointer_mut(parent).unwrap()
    };
    parent.as_object_mut().unwrap().remove(key);
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn missing_required_fields_are_named() {
    for pointer in [
        "/appid",
        "/mchid",
        "/description",
        "/out_trade_no",
        "/notify_url",
        "/amount",
        "/amount/total",
    ] {
        let e = assert_param_error(&official_without(pointer), pointer);
        assert!(e.message.contains("必填"), "{}", e.message);
    }
    let e = assert_param_error(
        &official_with("/out_trade_no", serde_json::Value::Null),
        "/out_trade_no",
    );
    assert!(e.message.contains("null"), "{}", e.message);
}

#[test]
fn wrong_types_are_param_errors_not_panics() {
    assert_param_error(
        &official_with("/amount/total", "100".into()),
        "/amount/total",
    );
    assert_param_error(
        &official_with("/amount/total", serde_json::json!(100.5)),
        "/amount/total",
    );
    assert_param_error(
        &official_with("/amount/total", serde_json::json!(1e30)),
        "/amount/total",
    );
    assert_param_error(
        &official_with("/amount/total", serde_json::json!(9223372036854775808u64)),
        "/amount/total",
    );
    assert_param_error(&official_with("/appid", 123.into()), "/appid");
    assert_param_error(&official_with("/payer", "oUpF8u".into()), "/payer");
    assert_param_error(
        &official_with("/settle_info", serde_json::json!({"profit_sharing":"yes"})),
        "/settle_info/profit_sharing",
    );
    assert_param_error(b"[1,2,3]", "");
    assert_param_error(b"\"just a string\"", "");
    assert_param_error(b"{\"appid\":", "/appid");
    assert_param_error(b"", "");
    assert_param_error(b"\xff\xfe{}", "");
}

#[test]
fn field_rules_reject_bad_values() {
    assert_param_error(&official_with("/amount/total", 0.into()), "/amount/total");
    assert_param_error(
        &official_with("/amount/total", (-1).into()),
        "/amount/total",
    );
    assert_param_error(
        &official_with("/out_trade_no", "1".repeat(33).into()),
        "/out_trade_no",
    );
    assert_param_error(
        &official_with("/description", "生日快乐😀".into()),
        "/description",
    );
    // Python's ensure_ascii writes the emoji as a surrogate pair: still a 4-byte character.
    let escaped = String::from_utf8(official_with("/description", "PLACEHOLDER".into())).unwrap();
    let escaped = escaped.replace("PLACEHOLDER", "\\ud83d\\ude00");
    assert_param_error(escaped.as_bytes(), "/description");
    // A lone surrogate is not a character at all.
    let lone = String::from_utf8(official_with("/description", "PLACEHOLDER".into())).unwrap();
    assert_param_error(
        lone.replace("PLACEHOLDER", "\\ud83d").as_bytes(),
        "/description",
    );
    assert_param_error(
        &official_with(
            "/notify_url",
            "https://www.weixin.qq.com/wxpay/pay.php?id=1".into(),
        ),
        "/notify_url",
    );
    assert_param_error(
        &official_with("/time_expire", "2018/06/08 10:34:56".into()),
        "/time_expire",
    );
    assert_param_error(
        &official_with("/amount/currency", "USD".into()),
        "/amount/currency",
    );
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9A-Za-z_|*-]{0,40}",
        "\\PC{0,20}",
        Just("Image形象店-深圳腾大-QQ公仔".to_owned()),
        Just("emoji😀".to_owned()),
        Just("https://example.com/notify".to_owned()),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-3i64..300).prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        text().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

const POINTERS: [&str; 14] = [
    "/appid",
    "/mchid",
    "/description",
    "/out_trade_no",
    "/time_expire",
    "/attach",
    "/notify_url",
    "/goods_tag",
    "/amount/total",
    "/amount/currency",
    "/payer/openid",
    "/detail",
    "/scene_info",
    "/settle_info",
];

fn accepted_round_trips(body: &[u8]) -> Result<(), TestCaseError> {
    match parse_json::<PrepayRequest>(body) {
        Ok(req) => {
            let again = serde_json::to_vec(&req).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parse_json::<PrepayRequest>(&again), Ok(req));
        }
        Err(e) => {
            prop_assert!(matches!(
                e.code,
                ErrorCode::ParamError | ErrorCode::InvalidRequest
            ));
            prop_assert_eq!(e.status(), 400);
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn parse_json_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        accepted_round_trips(&bytes)?;
    }

    #[test]
    fn parse_json_never_panics_on_mutated_official_bodies(
        edits in prop::collection::vec((0..POINTERS.len(), json_value()), 1..4),
        cut in prop::option::of(0usize..300),
    ) {
        let mut body = OFFICIAL_JSAPI.as_bytes().to_vec();
        for (i, value) in edits {
            let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let pointer = POINTERS[i];
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let slot = if parent.is_empty() { Some(&mut v) } else { v.pointer_mut(parent) };
            if let Some(serde_json::Value::Object(map)) = slot {
                map.insert(key.to_owned(), value);
            }
            body = serde_json::to_vec(&v).unwrap();
        }
        if let Some(cut) = cut {
            body.truncate(cut);
        }
        accepted_round_trips(&body)?;
    }

    #[test]
    fn accepted_requests_with_random_fields_round_trip_equal(
        description in text(),
        out_trade_no in "[0-9A-Za-z_|*-]{4,34}",
        attach in prop::option::of(text()),
        total in -2i64..i64::MAX,
        currency in prop::option::of(prop_oneof![Just("CNY".to_owned()), text()]),
        openid in prop::option::of("[0-9A-Za-z_-]{0,130}"),
    ) {
        let mut v: serde_json::Value = serde_json::from_str(OFFICIAL_JSAPI).unwrap();
        v["description"] = description.into();
        v["out_trade_no"] = out_trade_no.into();
        if let Some(a) = attach { v["attach"] = a.into(); }
        v["amount"]["total"] = total.into();
        if let Some(c) = currency { v["amount"]["currency"] = c.into(); }
        match openid {
            Some(o) => v["payer"]["openid"] = o.into(),
            None => { v.as_object_mut().unwrap().remove("payer"); }
        }
        accepted_round_trips(&serde_json::to_vec(&v).unwrap())?;
    }
}
