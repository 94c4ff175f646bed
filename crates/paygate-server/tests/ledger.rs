//! The ledger through the gateway, on SQLite and (with `PAYGATE_TEST_DATABASE_URL`)
//! PostgreSQL: a payment, partial refunds and a refused (CLOSED) refund move the balances
//! exactly as the recipe table says; 100 concurrent refunds on one order keep Σ debits =
//! Σ credits; the admin API's inclusion proof verifies against the signed checkpoint.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use paygate_ledger::{Checkpoint, Hash, NoteVerifier, verify_inclusion};
use paygate_wxpay::client::ClientError;
use paygate_wxpay::models::refunds::{Refund, RefundStatus};
use serde_json::{Value, json};

mod common;

use common::*;

impl Gw {
    async fn paid(&self, no: &str, total: i64) -> String {
        let body = json!({"appid": self.kit.merchant.appid, "mchid": self.mchid(),
            "description": "账本测试", "out_trade_no": no, "notify_url": "https://e.com/n",
            "amount": {"total": total, "currency": "CNY"}});
        let _: Value = self
            .client
            .post_json("/v3/pay/transactions/native", &body)
            .await
            .unwrap();
        self.pay(no).await;
        self.wait_state(no, "SUCCESS").await.transaction_id.unwrap()
    }

    async fn refund(
        &self,
        no: &str,
        out_refund_no: &str,
        refund: i64,
        total: i64,
    ) -> Result<Refund, ClientError> {
        let body = json!({"out_trade_no": no, "out_refund_no": out_refund_no,
            "amount": {"refund": refund, "total": total, "currency": "CNY"}});
        self.client
            .post_json("/v3/refund/domestic/refunds", &body)
            .await
    }

    async fn wait_refund(&self, out_refund_no: &str, status: RefundStatus) {
        eventually(|| async {
            let r: Refund = self
                .client
                .get_json(&format!("/v3/refund/domestic/refunds/{out_refund_no}"))
                .await
                .unwrap();
            (r.status == status).then_some(())
        })
        .await
    }

    /// `(balance_posted, pending)` of `kind`'s account of `owner`, from the admin API.
    async fn balance(&self, owner: &str, kind: &str) -> (i64, u64) {
        let (status, body) = self
            .admin(
                reqwest::Method::GET,
                &format!("ledger/accounts?owner={owner}"),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == kind)
            .map_or((0, 0), |a| {
                let pending =
                    a["debits_pending"].as_u64().unwrap() + a["credits_pending"].as_u64().unwrap();
                (
                    a["balance_posted"].as_str().unwrap().parse().unwrap(),
                    pending,
                )
            })
    }

    /// Σ debits and Σ credits (posted, pending) over every account.
    async fn sums(&self) -> [u128; 4] {
        let accounts = self.gw.state.store.ledger_accounts(None).await.unwrap();
        let mut s = [0u128; 4];
        for a in &accounts {
            let b = &a.balances;
            s[0] += u128::from(b.debits_posted);
            s[1] += u128::from(b.credits_posted);
            s[2] += u128::from(b.debits_pending);
            s[3] += u128::from(b.credits_pending);
        }
        s
    }
}

#[tokio::test]
async fn payment_partial_refunds_and_a_refused_refund_move_balances_as_the_recipes_say() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let mchid = gw.mchid().to_string();
        let channel = gw.gw.state.default_channel.clone();
        let no = out_no("L");
        let tid = gw.paid(&no, 10_000).await;
        // 0.60% of 10000 = 60: gross to clearing, fee to platform, net to the merchant.
        assert_eq!(gw.balance(&mchid, "merchant_pending").await, (9_940, 0));
        assert_eq!(gw.balance("platform", "platform_fee_income").await, (60, 0));
        assert_eq!(gw.balance(&channel, "channel_clearing").await, (10_000, 0));
        let order = gw
            .gw
            .state
            .store
            .get_order_by_transaction_id(&tid)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (order.pricing.fee_rate_ppm, order.pricing.fee_fen),
            (6_000, 60)
        );
        assert_eq!(
            (
                order.pricing.channel_cost_ppm,
                order.pricing.channel_cost_fen
            ),
            (6_000, 60)
        );

        // 3000 back: the fee's share floor(60 × 3000 / 10000) = 18 from the platform.
        gw.refund(&no, "lr-1", 3_000, 10_000).await.unwrap();
        gw.wait_refund("lr-1", RefundStatus::Success).await;
        assert_eq!(gw.balance(&mchid, "merchant_pending").await, (6_958, 0));
        assert_eq!(gw.balance("platform", "platform_fee_income").await, (42, 0));
        assert_eq!(gw.balance(&channel, "channel_clearing").await, (7_000, 0));
        // 2000 more: the fee given back follows the sum, floor(60 × 5000 / 10000) − 18 = 12.
        gw.refund(&no, "lr-2", 2_000, 10_000).await.unwrap();
        gw.wait_refund("lr-2", RefundStatus::Success).await;
        assert_eq!(gw.balance(&mchid, "merchant_pending").await, (4_970, 0));
        assert_eq!(gw.balance("platform", "platform_fee_income").await, (30, 0));
        assert_eq!(gw.balance(&channel, "channel_clearing").await, (5_000, 0));
        assert_eq!(gw.balance("platform", "refunds_payable").await, (0, 0));

        // The channel refuses the next one: CLOSED, its reservation voided.
        gw.channel_faults(
            json!({"errors": [{"code": "USER_ACCOUNT_ABNORMAL", "rate_ppm": 1_000_000}],
                                 "operations": ["refund"]}),
        )
        .await;
        let refused = gw.refund(&no, "lr-3", 1_000, 10_000).await;
        assert!(
            matches!(refused, Err(ClientError::Api { status: 403, .. })),
            "{refused:?}"
        );
        assert_eq!(gw.balance(&mchid, "merchant_pending").await, (4_970, 0));
        assert_eq!(gw.balance("platform", "platform_fee_income").await, (30, 0));
        let refunds = gw.gw.state.store.refunds_of(&tid).await.unwrap();
        let closed = refunds.iter().find(|r| r.out_refund_no == "lr-3").unwrap();
        let legs = gw
            .gw
            .state
            .store
            .ledger_transfers_by_reference(&closed.refund_id)
            .await
            .unwrap();
        let kinds: Vec<&str> = legs
            .iter()
            .map(|r| r.record.transfer.kind.as_str())
            .collect();
        assert_eq!(
            kinds,
            ["pending", "pending", "void_pending", "void_pending"]
        );
        let [dp, cp, dpe, cpe] = gw.sums().await;
        assert_eq!((dp, dpe), (cp, cpe), "Σ debits = Σ credits");
        assert_eq!(dpe, 0, "nothing left reserved");

        // The admin order view carries the refunds and the ledger transfers.
        let (status, view) = gw
            .admin(reqwest::Method::GET, &format!("orders/{tid}"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(view["refunds"].as_array().unwrap().len(), 3);
        // 2 payment legs; 5 + 5 for the successful refunds; 4 for the closed one.
        assert_eq!(view["ledger_transfers"].as_array().unwrap().len(), 16);

        // An inclusion proof of the payment's fee leg against the signed checkpoint.
        let (status, body) = gw
            .admin(
                reqwest::Method::GET,
                &format!("ledger/transfers?reference={tid}"),
            )
            .await;
        assert_eq!(status, 200);
        let fee_leg = body["transfers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["code"] == 102)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let (status, proof) = gw
            .admin(reqwest::Method::GET, &format!("ledger/proof/{fee_leg}"))
            .await;
        assert_eq!(status, 200, "{proof}");
        let verifier = NoteVerifier::from_vkey(proof["verifier_key"].as_str().unwrap()).unwrap();
        assert_eq!(verifier.to_vkey(), gw.gw.state.journal.verifier().to_vkey());
        let checkpoint =
            paygate_ledger::CheckpointVerifier::new(&gw.gw.state.journal.origin, verifier)
                .open(proof["checkpoint"].as_str().unwrap())
                .unwrap();
        let hash = |v: &Value| Hash::from_hex(v.as_str().unwrap()).unwrap();
        let path: Vec<Hash> = proof["audit_path"]
            .as_array()
            .unwrap()
            .iter()
            .map(hash)
            .collect();
        let size = proof["tree_size"].as_u64().unwrap();
        assert_eq!(size, checkpoint.size);
        verify_inclusion(
            &hash(&proof["leaf_hash"]),
            proof["leaf_index"].as_u64().unwrap(),
            size,
            &path,
            &checkpoint.root,
        )
        .unwrap();
        // The leaf is the transfer as stored.
        let row = gw
            .gw
            .state
            .store
            .ledger_transfer(fee_leg.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            paygate_ledger::canonical::leaf_hash_of(&row.record),
            hash(&proof["leaf_hash"])
        );
        let _: Checkpoint = checkpoint;
        // Bad input answers in the V3 shape, never a 500.
        let (status, bad) = gw
            .admin(reqwest::Method::GET, "ledger/proof/not-an-id")
            .await;
        assert_eq!((status, bad["code"].as_str()), (400, Some("PARAM_ERROR")));
        let (status, _) = gw
            .admin(
                reqwest::Method::GET,
                &format!("ledger/proof/{}", "1".repeat(32)),
            )
            .await;
        assert_eq!(status, 404);
        let (status, _) = gw.admin(reqwest::Method::GET, "ledger/transfers").await;
        assert_eq!(status, 400);
        gw.finish().await;
    }
}

#[tokio::test]
async fn concurrent_refunds_keep_debits_equal_to_credits() {
    for pg in backends() {
        let gw = Arc::new(start(pg.as_deref(), |_| {}).await);
        let mchid = gw.mchid().to_string();
        let channel = gw.gw.state.default_channel.clone();
        let no = out_no("M");
        let total = 1_000;
        gw.paid(&no, total).await;
        let tasks: Vec<_> = (0..100i64)
            .map(|i| {
                let gw = Arc::clone(&gw);
                let no = no.clone();
                let amount = 1 + (i * 37) % 60;
                tokio::spawn(async move {
                    let out = format!("mr-{i}");
                    (
                        out.clone(),
                        amount,
                        gw.refund(&no, &out, amount, total).await,
                    )
                })
            })
            .collect();
        let mut accepted = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (out, amount, Ok(_)) => accepted.push((out, amount)),
                (
                    _,
                    _,
                    Err(ClientError::Api {
                        status: 403, code, ..
                    }),
                ) => {
                    assert_eq!(code, "NOT_ENOUGH");
                }
                (_, _, Err(e)) => panic!("{e}"),
            }
        }
        for (out, _) in &accepted {
            gw.wait_refund(out, RefundStatus::Success).await;
        }
        let refunded: i64 = accepted.iter().map(|(_, a)| a).sum();
        assert!(refunded <= total && refunded > total - 60, "{refunded}");
        let [dp, cp, dpe, cpe] = gw.sums().await;
        assert_eq!(dp, cp, "Σ debits_posted = Σ credits_posted");
        assert_eq!((dpe, cpe), (0, 0), "every reservation posted");
        let left = total - refunded;
        assert_eq!(gw.balance(&channel, "channel_clearing").await, (left, 0));
        let merchant = gw.balance(&mchid, "merchant_pending").await.0;
        let fee = gw.balance("platform", "platform_fee_income").await.0;
        assert_eq!(
            merchant + fee,
            left,
            "what is left is the merchant's and the fee"
        );
        assert!((0..=6).contains(&fee));
        println!(
            "{} of 100 refunds accepted ({refunded} fen); merchant {merchant}, fee {fee}, Σ debits = Σ credits = {dp}",
            accepted.len()
        );
        match Arc::try_unwrap(gw) {
            Ok(gw) => gw.finish().await,
            Err(_) => panic!("gateway still shared"),
        }
    }
}
