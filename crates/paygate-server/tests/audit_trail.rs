//! Issue 7 §6: every admin action that changes something lands in the chained operator
//! audit trail (`GET /admin/v1/audit`), and an entry edited behind the gateway's back is
//! named by the verification (`GET /admin/v1/audit/verify`, the check `paygate audit verify`
//! runs). On SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use serde_json::{Value, json};

mod common;

use common::*;

async fn admin_post(gw: &Gw, path: &str, body: Value) -> u16 {
    gw.http
        .post(format!("{}admin/v1/{path}", gw.gw.base_url))
        .bearer_auth("operator-secret")
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn edit_behind_the_gateways_back(gw: &Gw, sql: &str) {
    match &gw.pg_schema {
        None => {
            let conn = rusqlite::Connection::open(gw.dir.join("paygate.db")).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .unwrap();
            assert_eq!(conn.execute(sql, []).unwrap(), 1);
        }
        Some((url, schema)) => {
            use sqlx::Connection;
            let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
            let mut conn = sqlx::PgConnection::connect_with(
                &options.options([("search_path", schema.as_str())]),
            )
            .await
            .unwrap();
            let done = sqlx::query(sql).execute(&mut conn).await.unwrap();
            assert_eq!(done.rows_affected(), 1);
            conn.close().await.unwrap();
        }
    }
}

#[tokio::test]
async fn admin_actions_are_chained_in_the_audit_trail_and_an_edit_is_named() {
    for pg in backends() {
        let gw = start(pg.as_deref(), |_| {}).await;
        let mchid = gw.mchid().to_string();
        assert_eq!(
            gw.admin(Method::POST, &format!("merchants/{mchid}/disable"))
                .await
                .0,
            200
        );
        assert_eq!(
            gw.admin(Method::POST, &format!("merchants/{mchid}/enable"))
                .await
                .0,
            200
        );
        assert_eq!(
            admin_post(&gw, "merchants", json!({"name": "second shop"})).await,
            200
        );
        // A refused action is recorded too, with its status.
        assert_eq!(admin_post(&gw, "merchants", json!({"nom": "x"})).await, 400);
        // Reads are not actions.
        assert_eq!(gw.admin(Method::GET, "merchants").await.0, 200);

        let (status, trail) = gw.admin(Method::GET, "audit").await;
        assert_eq!(status, 200, "{trail}");
        let entries = trail["entries"].as_array().unwrap();
        let actions: Vec<(&str, &str, u64)> = entries
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap(),
                    e["target"].as_str().unwrap(),
                    e["detail"].as_str().map_or(0, |d| {
                        serde_json::from_str::<Value>(d).unwrap()["status"]
                            .as_u64()
                            .unwrap()
                    }),
                )
            })
            .collect();
        let disable = format!("/admin/v1/merchants/{mchid}/disable");
        let enable = format!("/admin/v1/merchants/{mchid}/enable");
        assert_eq!(
            actions,
            vec![
                (
                    "POST /admin/v1/merchants/{mchid}/disable",
                    disable.as_str(),
                    200
                ),
                (
                    "POST /admin/v1/merchants/{mchid}/enable",
                    enable.as_str(),
                    200
                ),
                ("POST /admin/v1/merchants", "/admin/v1/merchants", 200),
                ("POST /admin/v1/merchants", "/admin/v1/merchants", 400),
            ],
            "{trail}"
        );
        assert_eq!(entries[0]["actor"], "operator");
        assert_eq!(entries[1]["prev_hash"], entries[0]["hash"]);
        let (_, verdict) = gw.admin(Method::GET, "audit/verify").await;
        assert_eq!(verdict["intact"], true, "{verdict}");
        assert_eq!(verdict["entries_verified"], 4);

        // Someone with database access rewrites what the second action was done to.
        edit_behind_the_gateways_back(
            &gw,
            "UPDATE operator_audit SET target = '/admin/v1/merchants/1900000000/enable' WHERE seq = 2",
        )
        .await;
        let (_, verdict) = gw.admin(Method::GET, "audit/verify").await;
        assert_eq!(verdict["intact"], false, "{verdict}");
        assert_eq!(verdict["broken"]["seq"], 2, "{verdict}");
        assert_eq!(verdict["entries_verified"], 1);
        gw.finish().await;
    }
}
