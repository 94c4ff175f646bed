//! Risk rules stored with versions and hot-reloaded on every node (issue 6 §4), over HTTP as
//! an operator and a merchant see it: two gateways share one store (SQLite, and PostgreSQL
//! when PAYGATE_TEST_DATABASE_URL is set), each polling it every second.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::time::{Duration, Instant};

use paygate_server::config::Config;
use paygate_server::{RunningGateway, channel_mapping, merchants};
use paygate_wxpay::client::{ClientError, KeyMode, WxClient};
use paygate_wxpay::kit::MerchantKit;
use serde_json::{Value, json};

const TOKEN: &str = "operator-secret";
/// The nodes' reload interval in these tests.
const RELOAD_INTERVAL_S: u64 = 1;
/// How long a node may take to pick up another node's save: its interval and some slack
/// for a loaded machine.
const PICK_UP_DEADLINE: Duration = Duration::from_secs(RELOAD_INTERVAL_S + 10);

struct Node {
    gw: RunningGateway,
    client: WxClient,
}

struct Cluster {
    nodes: Vec<Node>,
    appid: String,
    dirs: Vec<std::path::PathBuf>,
    pg_schema: Option<(String, String)>,
    http: reqwest::Client,
}

fn backends() -> Vec<Option<String>> {
    let mut b = vec![None];
    match std::env::var("PAYGATE_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => b.push(Some(url)),
        _ => eprintln!("PAYGATE_TEST_DATABASE_URL not set: PostgreSQL runs of this test skipped"),
    }
    b
}

fn node_config(root: &std::path::Path, i: usize, database_url: &str) -> Config {
    let mut config = Config {
        data_dir: root.join(format!("node{i}")),
        database_url: Some(database_url.to_string()),
        operator_token: Some(TOKEN.into()),
        ..Config::default()
    };
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.sandbox.time_scale = 1000;
    config.workers.poll_interval_ms = 100_000;
    config.workers.poll_min_age_ms = 100_000;
    config.risk.reload_interval_s = RELOAD_INTERVAL_S;
    // Nodes of one database share its master key (each data dir would otherwise make its own).
    config.security.master_key = Some(format!("file:{}", root.join("master.key").display()));
    config
}

/// Two gateways started at once on one empty store, and a merchant onboarded through the first.
async fn cluster(pg: Option<&str>) -> Cluster {
    let root = std::env::temp_dir().join(format!("paygate-rules-{}", uuid::Uuid::new_v4()));
    let (database_url, pg_schema) = match pg {
        Some(url) => {
            let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
            let sep = if url.contains('?') { '&' } else { '?' };
            (
                format!("{url}{sep}schema={schema}"),
                Some((url.to_string(), schema)),
            )
        }
        None => (
            format!(
                "sqlite://{}",
                root.join("shared").join("paygate.db").display()
            ),
            None,
        ),
    };
    // The shared database, its migrations and platform keys first, so that the nodes race
    // only on the rules' seed. (Two nodes creating the first platform keys at once can each
    // keep their own: keys.rs re-reads only when its own insert conflicts.)
    let store = paygate_store::open(&database_url).await.unwrap();
    paygate_server::keys::PlatformKeys::load_or_create(store.as_ref())
        .await
        .unwrap();
    store.close().await;
    // The shared master key exists before the nodes race to start.
    paygate_server::key_rotation::load_master_key(&node_config(&root, 0, &database_url)).unwrap();
    let (a, b) = tokio::join!(
        paygate_server::start(node_config(&root, 0, &database_url)),
        paygate_server::start(node_config(&root, 1, &database_url)),
    );
    let gws = [a.expect("node 0 starts"), b.expect("node 1 starts")];
    let first = &gws[0];
    let channel = first.state.channel(&first.state.default_channel).unwrap();
    let onboarded = merchants::onboard(
        first.state.store.as_ref(),
        &first.state.keys,
        &first.base_url,
        merchants::NewMerchant {
            name: "rules shop".into(),
            cert_pem: None,
            mapping: channel_mapping(channel.config(), None, None).unwrap(),
        },
    )
    .await
    .unwrap();
    let nodes = gws
        .into_iter()
        .map(|gw| {
            let mut kit: MerchantKit = onboarded.kit.clone();
            kit.merchant.base_url = gw.base_url.clone();
            let client = WxClient::from_kit(&kit, KeyMode::PublicKey, 10_000).unwrap();
            Node { gw, client }
        })
        .collect();
    Cluster {
        nodes,
        appid: onboarded.kit.merchant.appid.clone(),
        dirs: vec![root],
        pg_schema,
        http: reqwest::Client::new(),
    }
}

impl Cluster {
    async fn finish(mut self) {
        for node in &mut self.nodes {
            node.gw.task.abort();
            node.gw.state.store.close().await;
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((url, schema)) = self.pg_schema.take()
            && let Err(e) = paygate_store::drop_postgres_schema(&url, &schema).await
        {
            eprintln!("leaving schema {schema}: {e}");
        }
    }

    async fn admin(&self, node: usize, method: reqwest::Method, path: &str) -> (u16, Value) {
        self.admin_with(node, method, path, None).await
    }

    async fn admin_with(
        &self,
        node: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(
                method,
                format!("{}admin/v1/{path}", self.nodes[node].gw.base_url),
            )
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    async fn rules(&self, node: usize) -> Value {
        let (status, rules) = self.admin(node, reqwest::Method::GET, "risk/rules").await;
        assert_eq!(status, 200, "{rules}");
        rules
    }

    async fn put_rules(&self, node: usize, body: &Value) -> (u16, Value) {
        self.admin_with(node, reqwest::Method::PUT, "risk/rules", Some(body))
            .await
    }

    async fn status(&self, node: usize) -> Value {
        let (status, body) = self.admin(node, reqwest::Method::GET, "risk/status").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// A JSAPI prepay on `node`: Ok, or the V3 error's (status, code).
    async fn prepay(
        &self,
        node: usize,
        amount_fen: i64,
        openid: &str,
    ) -> Result<(), (u16, String)> {
        let client = &self.nodes[node].client;
        let body = json!({
            "appid": self.appid, "mchid": client.mchid(), "description": "规则测试",
            "out_trade_no": format!("R{}", &uuid::Uuid::new_v4().simple().to_string()[..24]),
            "notify_url": "https://merchant.example.com/notify",
            "amount": {"total": amount_fen, "currency": "CNY"},
            "payer": {"openid": openid},
        });
        match client
            .post_json::<_, Value>("/v3/pay/transactions/jsapi", &body)
            .await
        {
            Ok(_) => Ok(()),
            Err(ClientError::Api { status, code, .. }) => Err((status, code)),
            Err(e) => panic!("prepay on node {node}: {e}"),
        }
    }

    /// Waits until `node`'s engine decides on `version`.
    async fn wait_for_version(&self, node: usize, version: u64) {
        eventually(&format!("node {node} on version {version}"), || async {
            self.status(node).await["rules_version_in_use"] == version
        })
        .await;
    }
}

/// Polls `check` until it holds, failing the test after [`PICK_UP_DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < PICK_UP_DEADLINE,
            "{what}: not within {PICK_UP_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tagged `block`: with the sandbox on, `risk.enforce` defaults to `lists`, where only an
/// operator's blocking rules refuse.
fn deny_4242_rule() -> Value {
    json!({
        "id": "TEST-DENY-4242", "layer": "rule",
        "description": "test: 42.42 yuan is refused",
        "expression": "amount_fen == 4242", "score": 1000, "tags": ["test", "block"],
    })
}

/// The newest set with `rule` added, as a PUT body based on its version.
async fn with_rule(cluster: &Cluster, author: &str, rule: Value) -> Value {
    let current = cluster.rules(0).await;
    let mut rules = current["rules"].as_array().unwrap().clone();
    rules.push(rule);
    json!({
        "based_on_version": current["version"], "rules": rules, "lists": current["lists"],
        "author": author, "comment": "test change",
    })
}

const HONEST: &str = "oHonestPayer0000000000000000";
const BLOCKED: &str = "oBlockedPayer000000000000000";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_starting_on_an_empty_store_seed_the_rules_once() {
    for pg in backends() {
        let c = cluster(pg.as_deref()).await;
        let store = &c.nodes[0].gw.state.store;
        assert_eq!(store.risk_rule_set_version().await.unwrap(), 1);
        let audit = store.risk_rule_audit(10).await.unwrap();
        assert_eq!(audit.len(), 1, "one seed: {audit:?}");
        assert_eq!(audit[0].author, "paygate");
        for node in 0..2 {
            let rules = c.rules(node).await;
            assert_eq!(rules["version"], 1);
            assert_eq!(rules["in_use_version"], 1);
            assert!(
                rules["rules"].as_array().unwrap().len() >= 200,
                "the bundled library"
            );
            let status = c.status(node).await;
            assert_eq!(status["rules_version_in_use"], 1);
            assert_eq!(status["stored_version"], 1);
            assert_eq!(status["reload_interval_s"], RELOAD_INTERVAL_S);
            assert_eq!(status["reloader_last_error"], Value::Null);
            assert!(status["memory_bound_bytes"].as_u64().unwrap() > 0);
        }
        c.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rule_saved_on_one_node_decides_there_at_once_and_on_the_other_within_its_interval() {
    for pg in backends() {
        let c = cluster(pg.as_deref()).await;
        assert_eq!(c.prepay(0, 4242, HONEST).await, Ok(()), "allowed before");
        assert_eq!(c.prepay(1, 4242, HONEST).await, Ok(()), "allowed before");

        let (status, saved) = c
            .put_rules(0, &with_rule(&c, "alice", deny_4242_rule()).await)
            .await;
        assert_eq!(status, 200, "{saved}");
        assert_eq!(saved["version"], 2);
        assert_eq!(saved["in_use_version"], 2, "applied before the answer");
        assert_eq!(saved["apply_error"], Value::Null);
        assert_eq!(saved["changes"]["rules_added"], json!(["TEST-DENY-4242"]));

        let refused = Err((403, "RULE_LIMIT".to_string()));
        assert_eq!(
            c.prepay(0, 4242, HONEST).await,
            refused,
            "at once on node 0"
        );
        assert_eq!(c.prepay(0, 4243, HONEST).await, Ok(()), "only 42.42");
        c.wait_for_version(1, 2).await;
        assert_eq!(c.prepay(1, 4242, HONEST).await, refused, "node 1 reloaded");
        assert_eq!(c.status(1).await["reloader_last_error"], Value::Null);
        c.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rule_that_does_not_compile_is_refused_naming_it_and_nothing_changes() {
    for pg in backends() {
        let c = cluster(pg.as_deref()).await;
        let broken = [
            (json!("amount_fen =="), "does not compile"),
            (json!("no_such_feature > 1"), "not a feature"),
            (json!("amount_fen + 1"), "not a bool"),
        ];
        for (expression, why) in broken {
            let mut rule = deny_4242_rule();
            rule["id"] = json!("TEST-BROKEN");
            rule["expression"] = expression;
            let (status, refused) = c.put_rules(0, &with_rule(&c, "mallory", rule).await).await;
            assert_eq!(status, 400, "{refused}");
            assert_eq!(refused["code"], "PARAM_ERROR");
            let message = refused["message"].as_str().unwrap();
            assert!(
                message.contains("TEST-BROKEN") && message.contains(why),
                "names the rule and says why: {message}"
            );
        }
        // An example that does not do what it says is refused the same way.
        let mut rule = deny_4242_rule();
        rule["example_fires"] = json!({"event": {"amount_fen": 4243}});
        let (status, refused) = c.put_rules(0, &with_rule(&c, "mallory", rule).await).await;
        assert_eq!(status, 400, "{refused}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .contains("TEST-DENY-4242")
        );

        let store = &c.nodes[0].gw.state.store;
        assert_eq!(
            store.risk_rule_set_version().await.unwrap(),
            1,
            "nothing saved"
        );
        assert_eq!(store.risk_rule_audit(10).await.unwrap().len(), 1);
        assert_eq!(c.status(0).await["rules_version_in_use"], 1);
        assert_eq!(c.prepay(0, 4242, HONEST).await, Ok(()));
        c.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_save_based_on_a_stale_version_conflicts() {
    for pg in backends() {
        let c = cluster(pg.as_deref()).await;
        let alice = with_rule(&c, "alice", deny_4242_rule()).await;
        let mut bob_rule = deny_4242_rule();
        bob_rule["id"] = json!("TEST-DENY-4343");
        bob_rule["expression"] = json!("amount_fen == 4343");
        let bob = with_rule(&c, "bob", bob_rule).await;
        assert_eq!(alice["based_on_version"], bob["based_on_version"]);

        let (status, saved) = c.put_rules(0, &alice).await;
        assert_eq!((status, &saved["version"]), (200, &json!(2)), "{saved}");
        // Bob saves on the other node, on the version he read: someone was faster.
        let (status, conflict) = c.put_rules(1, &bob).await;
        assert_eq!(status, 409, "{conflict}");
        assert_eq!(conflict["code"], "INVALID_REQUEST");
        assert!(
            conflict["message"].as_str().unwrap().contains("now 2"),
            "{conflict}"
        );
        let rules = c.rules(1).await;
        assert_eq!(rules["version"], 2);
        assert_eq!(rules["author"], "alice", "bob's set was not saved");
        c.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_says_who_changed_what_and_when_newest_first() {
    for pg in backends() {
        let before = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
        let c = cluster(pg.as_deref()).await;
        // Alice adds one rule, drops one and rescores another.
        let mut body = with_rule(&c, "alice", deny_4242_rule()).await;
        let rules = body["rules"].as_array_mut().unwrap();
        let dropped = rules.remove(0)["id"].as_str().unwrap().to_string();
        let changed = rules[0]["id"].as_str().unwrap().to_string();
        rules[0]["score"] = json!(rules[0]["score"].as_i64().unwrap() + 1);
        let (status, saved) = c.put_rules(0, &body).await;
        assert_eq!(status, 200, "{saved}");
        // Bob blocks a payer.
        let (status, listed) = c
            .admin_with(
                1,
                reqwest::Method::POST,
                "risk/lists",
                Some(&json!({"author": "bob", "comment": "case 77",
                    "add": [{"kind": "block", "entity": "ip", "value": "203.0.113.9", "reason": "case 77"}]})),
            )
            .await;
        assert_eq!(status, 200, "{listed}");

        let (status, audit) = c.admin(0, reqwest::Method::GET, "risk/audit").await;
        assert_eq!(status, 200, "{audit}");
        let audit = audit.as_array().unwrap();
        let versions: Vec<_> = audit.iter().map(|a| a["version"].clone()).collect();
        assert_eq!(versions, vec![json!(3), json!(2), json!(1)], "newest first");
        assert_eq!(audit[0]["author"], "bob");
        assert_eq!(audit[0]["comment"], "case 77");
        assert_eq!(audit[0]["list_entries_added"][0]["value"], "203.0.113.9");
        assert_eq!(audit[0]["rules_added"], json!([]));
        assert_eq!(audit[1]["author"], "alice");
        assert_eq!(audit[1]["rules_added"], json!(["TEST-DENY-4242"]));
        assert_eq!(audit[1]["rules_removed"], json!([dropped]));
        assert_eq!(audit[1]["rules_changed"], json!([changed]));
        assert_eq!(audit[2]["author"], "paygate");
        for entry in audit {
            let at = time::OffsetDateTime::parse(
                entry["at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            assert!(
                at >= before && at <= time::OffsetDateTime::now_utc(),
                "{entry}"
            );
        }
        let (_, one) = c.admin(0, reqwest::Method::GET, "risk/audit?limit=1").await;
        assert_eq!(one.as_array().unwrap().len(), 1, "bounded");
        let (status, bad) = c.admin(0, reqwest::Method::GET, "risk/audit?limit=0").await;
        assert_eq!((status, &bad["code"]), (400, &json!("PARAM_ERROR")));
        c.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payer_put_on_the_block_list_is_refused_on_both_nodes_until_removed() {
    for pg in backends() {
        let c = cluster(pg.as_deref()).await;
        assert_eq!(c.prepay(0, 100, BLOCKED).await, Ok(()));
        let entry =
            json!({"kind": "block", "entity": "payer", "openid": BLOCKED, "reason": "chargeback"});
        let (status, saved) = c
            .admin_with(
                0,
                reqwest::Method::POST,
                "risk/lists",
                Some(&json!({"author": "carol", "add": [entry]})),
            )
            .await;
        assert_eq!(status, 200, "{saved}");
        assert_eq!(saved["version"], 2);
        let stored = c.rules(0).await;
        let value = stored["lists"][0]["value"].as_str().unwrap();
        assert_ne!(value, BLOCKED, "stored as the payer key, never the openid");

        let refused = Err((403, "RULE_LIMIT".to_string()));
        assert_eq!(c.prepay(0, 100, BLOCKED).await, refused);
        assert_eq!(c.prepay(0, 100, HONEST).await, Ok(()));
        c.wait_for_version(1, 2).await;
        assert_eq!(c.prepay(1, 100, BLOCKED).await, refused);

        let (status, removed) = c
            .admin_with(
                1,
                reqwest::Method::POST,
                "risk/lists",
                Some(&json!({"author": "carol", "comment": "refunded",
                    "remove": [{"kind": "block", "entity": "payer", "openid": BLOCKED}]})),
            )
            .await;
        assert_eq!(status, 200, "{removed}");
        assert_eq!(
            removed["changes"]["list_entries_removed"][0]["value"],
            value
        );
        assert_eq!(c.prepay(1, 100, BLOCKED).await, Ok(()));
        c.wait_for_version(0, 3).await;
        assert_eq!(c.prepay(0, 100, BLOCKED).await, Ok(()));

        let (status, bad) = c
            .admin_with(
                0,
                reqwest::Method::POST,
                "risk/lists",
                Some(&json!({"author": "carol",
                    "add": [{"kind": "block", "entity": "ip", "openid": BLOCKED}]})),
            )
            .await;
        assert_eq!(
            (status, &bad["code"]),
            (400, &json!("PARAM_ERROR")),
            "{bad}"
        );
        c.finish().await;
    }
}

/// A version that reached the store without validation (written by a newer build, say) and
/// does not compile here: skipped, the engine keeps deciding on its set, the error is shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stored_version_that_does_not_compile_here_is_skipped_and_evaluation_goes_on() {
    for pg in backends() {
        let c = cluster(pg.as_deref()).await;
        let (status, saved) = c
            .put_rules(0, &with_rule(&c, "alice", deny_4242_rule()).await)
            .await;
        assert_eq!(status, 200, "{saved}");
        // A reloader applies the newest version only: node 1 must have taken version 2 before
        // version 3 lands, or it stays on 1.
        c.wait_for_version(1, 2).await;
        let mut broken = deny_4242_rule();
        broken["id"] = json!("FROM-A-NEWER-BUILD");
        broken["expression"] = json!("feature_of_the_future > 1");
        let stored = c.rules(0).await;
        let mut rules = stored["rules"].as_array().unwrap().clone();
        rules.push(broken);
        c.nodes[0]
            .gw
            .state
            .store
            .insert_risk_rule_set(
                &paygate_store::RiskRuleSetRecord {
                    version: 3,
                    rules_json: Value::Array(rules).to_string(),
                    lists_json: "[]".into(),
                    created_by: "newer build".into(),
                    created_at: time::OffsetDateTime::now_utc(),
                    comment: String::new(),
                },
                "{}",
            )
            .await
            .unwrap();
        for node in 0..2 {
            eventually(
                &format!("node {node} reports the skipped version"),
                || async {
                    let status = c.status(node).await;
                    status["stored_version"] == 3
                        && status["reloader_last_error"]
                            .as_str()
                            .is_some_and(|e| e.contains("FROM-A-NEWER-BUILD"))
                },
            )
            .await;
            assert_eq!(c.status(node).await["rules_version_in_use"], 2);
            assert_eq!(
                c.prepay(node, 4242, HONEST).await,
                Err((403, "RULE_LIMIT".to_string())),
                "still deciding on version 2"
            );
        }
        // A valid save on top of it is what the nodes take next.
        let mut fixed = c.rules(0).await;
        let rules: Vec<Value> = fixed["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["id"] != "FROM-A-NEWER-BUILD")
            .cloned()
            .collect();
        fixed = json!({"based_on_version": 3, "rules": rules, "lists": [], "author": "alice"});
        let (status, saved) = c.put_rules(0, &fixed).await;
        assert_eq!(status, 200, "{saved}");
        assert_eq!(saved["in_use_version"], 4);
        c.wait_for_version(1, 4).await;
        eventually("node 1's error clears", || async {
            c.status(1).await["reloader_last_error"].is_null()
        })
        .await;
        c.finish().await;
    }
}
