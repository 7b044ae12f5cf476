//! The store's behaviour, checked by one suite that runs against both backends: SQLite in
//! a temporary directory and PostgreSQL in a throwaway database (created on the server
//! named by SLUICE_TEST_PG_URL, default postgres://postgres@127.0.0.1:5432/postgres, and
//! dropped afterwards, also when the test fails). SLUICE_TEST_PG_URL=skip skips the
//! PostgreSQL half; an unreachable server is a failure, not a silent skip.

use serde_json::json;
use sluice_core::{Code, FeedSignature, Role};
use sluice_store::{
    LATENCY_BOUNDS_MS, LATENCY_BUCKETS, MinuteCounts, NewInvocation, NewKey, NewLink, NewRevision,
    Store, TrafficBucket, latency_bucket,
};
use sqlx::{Connection, Executor};
use std::future::Future;

const SECRET: [u8; 32] = [42; 32];
const DEFAULT_PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// One backend's database for one test.
struct Env {
    backend: &'static str,
    url: String,
    /// The SQLite data directory (kept alive for the test).
    dir: Option<tempfile::TempDir>,
}

impl Env {
    async fn open(&self) -> Store {
        let store = Store::open(&self.url, SECRET)
            .await
            .expect("the store opens");
        assert_eq!(store.backend(), self.backend);
        store
    }

    /// A column read with plain SQL, bypassing the store: what an attacker with the
    /// database file or a backup would see.
    async fn raw_scalar(&self, sql: &str, arg: &str) -> String {
        if self.backend == "sqlite" {
            let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql)
                .bind(arg)
                .fetch_one(&mut c)
                .await
                .unwrap()
        } else {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql)
                .bind(arg)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    }

    async fn raw_count(&self, sql: &str) -> i64 {
        if self.backend == "sqlite" {
            let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        } else {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        }
    }
}

async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    // A data directory that does not exist yet: open must create it.
    let url = sluice_store::sqlite_url(&dir.path().join("data"));
    test(Env {
        backend: "sqlite",
        url,
        dir: Some(dir),
    })
    .await;
}

async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let admin_url =
        std::env::var("SLUICE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.to_string());
    if admin_url == "skip" {
        eprintln!("SLUICE_TEST_PG_URL=skip: PostgreSQL half of the store tests skipped");
        return;
    }
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {admin_url}: {e}\n\
             The store tests run against a real PostgreSQL. Start one that accepts user postgres \
             with trust auth on 127.0.0.1:5432 (e.g. `pg_ctlcluster 15 main start`), or set \
             SLUICE_TEST_PG_URL to the URL of an admin database on another server, or set \
             SLUICE_TEST_PG_URL=skip to run only the SQLite half."
            )
        });
    let db = format!("sluice_store_test_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(format!("CREATE DATABASE {db}").as_str())
        .await
        .expect("create a throwaway database");
    let url = with_database(&admin_url, &db);
    // Run the test in its own task so a failing assertion comes back as a JoinError and
    // the database is still dropped before the failure is re-raised.
    let outcome = tokio::spawn(test(Env {
        backend: "postgres",
        url,
        dir: None,
    }))
    .await;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str())
        .await
        .expect("drop the throwaway database");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The URL of another database on the same server.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::with_sqlite(super::$name).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::with_postgres(super::$name).await })*
        }
    };
}

on_both_backends!(
    reopening_keeps_data_and_runs_migrations_once,
    settings_round_trip,
    workspaces_are_unique_and_validated,
    keys_are_created_found_touched_and_revoked,
    source_configs_are_sealed_at_rest_and_granted,
    a_wrong_master_key_is_refused,
    deploys_number_revisions_and_roll_back,
    a_failing_deploy_leaves_nothing_behind,
    concurrent_deploys_of_one_feed_get_distinct_numbers,
    deleting_a_feed_removes_its_revisions_and_invocations,
    invocations_are_batched_paged_and_pruned,
    traffic_minutes_add_up_over_replicas_and_revisions_without_double_counting,
    feed_links_are_hashed_scoped_revoked_and_go_with_their_feed,
    drafts_are_per_owner_and_workspace_and_replaced_on_save,
    cluster_feeds_get_a_log_and_counts_but_stay_out_of_listings,
);

fn sig(name: &str) -> FeedSignature {
    serde_json::from_value(json!({
        "name": name,
        "doc": format!("Docs of {name}."),
        "params": [{"name": "region", "type": "str", "default": "EU"}],
        "cache": "5m",
    }))
    .unwrap()
}

fn rev(feed: &str, code: &str) -> NewRevision {
    NewRevision {
        feed: feed.into(),
        filename: "sales.py".into(),
        source: code.into(),
        lock: "pandas==2.2.3\n".into(),
        env_hash: format!("env-{code}"),
        signature: sig(feed),
        created_by: "alice".into(),
    }
}

fn inv(feed: &str, n: i64) -> NewInvocation {
    NewInvocation {
        workspace: "demo".into(),
        feed: feed.into(),
        revision: 1,
        request_id: format!("req-{feed}-{n}"),
        status: if n % 5 == 0 { 500 } else { 200 },
        duration_ms: 1.5 + n as f64,
        rows: n * 10,
        error_code: (n % 5 == 0).then(|| "feed_raised".to_string()),
        stdout: format!("out {n}"),
        stderr: String::new(),
        params: json!({"region": "EU", "n": n}),
        at: chrono::DateTime::from_timestamp_millis(1_700_000_000_000 + n).unwrap(),
    }
}

async fn reopening_keeps_data_and_runs_migrations_once(env: Env) {
    let store = env.open().await;
    store.create_workspace("demo").await.unwrap();
    store.set_setting("initialized", "yes").await.unwrap();
    store
        .deploy("demo", vec![rev("sales", "v1")])
        .await
        .unwrap();
    store
        .upsert_source(
            "warehouse",
            "postgres",
            &json!({"url": "postgres://u:pw@h/db"}),
        )
        .await
        .unwrap();
    store.close().await;

    // Twice more: migrations must be recorded and not re-applied.
    for _ in 0..2 {
        let store = env.open().await;
        assert_eq!(
            store.setting("initialized").await.unwrap().as_deref(),
            Some("yes")
        );
        assert_eq!(store.list_workspaces().await.unwrap().len(), 1);
        let live = store
            .live_revision("demo", "sales")
            .await
            .unwrap()
            .expect("live revision survives a restart");
        assert_eq!((live.number, live.source.as_str()), (1, "v1"));
        assert_eq!(live.signature, sig("sales"));
        let source = store.source("warehouse").await.unwrap().unwrap();
        assert_eq!(source.config, json!({"url": "postgres://u:pw@h/db"}));
        store.close().await;
    }
    // Each migration of the backend's folder ran once, however often the store opened.
    let migrations = std::fs::read_dir(format!(
        "{}/migrations/{}",
        env!("CARGO_MANIFEST_DIR"),
        env.backend
    ))
    .unwrap()
    .filter(|e| e.as_ref().unwrap().path().extension() == Some("sql".as_ref()))
    .count();
    assert_eq!(
        env.raw_count("SELECT COUNT(*) FROM _sqlx_migrations").await,
        i64::try_from(migrations).unwrap()
    );
    if let Some(dir) = &env.dir {
        assert!(
            dir.path().join("data/sluice.db").is_file(),
            "the embedded database lives at <data_dir>/sluice.db"
        );
    }
}

async fn settings_round_trip(env: Env) {
    let store = env.open().await;
    assert_eq!(store.setting("initialized").await.unwrap(), None);
    store.set_setting("initialized", "1").await.unwrap();
    store.set_setting("initialized", "2").await.unwrap();
    assert_eq!(
        store.setting("initialized").await.unwrap().as_deref(),
        Some("2")
    );
}

async fn workspaces_are_unique_and_validated(env: Env) {
    let store = env.open().await;
    let created = store.create_workspace("zeta").await.unwrap();
    store.create_workspace("alpha").await.unwrap();
    assert_eq!(store.workspace("zeta").await.unwrap(), Some(created));
    assert_eq!(store.workspace("nope").await.unwrap(), None);

    let dup = store.create_workspace("zeta").await.unwrap_err();
    assert_eq!(dup.code, Code::AlreadyExists);
    assert!(
        dup.message.contains("'zeta' already exists"),
        "{}",
        dup.message
    );
    assert_eq!(
        store.create_workspace("Bad-Name").await.unwrap_err().code,
        Code::InvalidName
    );

    let names: Vec<_> = store
        .list_workspaces()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(names, ["alpha", "zeta"]);
}

async fn keys_are_created_found_touched_and_revoked(env: Env) {
    let store = env.open().await;
    store.create_workspace("demo").await.unwrap();
    let key = |name: &str, prefix: &str, role, ws: Option<&str>| NewKey {
        name: name.into(),
        prefix: prefix.into(),
        hash: sluice_core::keys::hash(prefix),
        role,
        workspace: ws.map(Into::into),
    };

    let admin = store
        .create_key(key("root", "aaaaaaaaaa", Role::Admin, None))
        .await
        .unwrap();
    assert_eq!(admin.workspace, None);
    let editor = store
        .create_key(key("ci", "bbbbbbbbbb", Role::Editor, Some("demo")))
        .await
        .unwrap();
    assert_eq!(editor.workspace.as_deref(), Some("demo"));

    let e = store
        .create_key(key("x", "cccccccccc", Role::Viewer, None))
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::BadRequest);
    let e = store
        .create_key(key("x", "cccccccccc", Role::Admin, Some("demo")))
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::BadRequest);
    let e = store
        .create_key(key("x", "cccccccccc", Role::Viewer, Some("ghost")))
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::WorkspaceNotFound);
    let e = store
        .create_key(key("again", "bbbbbbbbbb", Role::Viewer, Some("demo")))
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::AlreadyExists);

    let found = store
        .key_by_prefix("bbbbbbbbbb")
        .await
        .unwrap()
        .expect("key found by prefix");
    assert_eq!((found.name.as_str(), found.role), ("ci", Role::Editor));
    assert!(sluice_core::keys::hashes_equal(
        &found.hash,
        &sluice_core::keys::hash("bbbbbbbbbb")
    ));
    assert_eq!(found.last_used_at, None);
    assert!(
        serde_json::to_value(&found).unwrap().get("hash").is_none(),
        "the hash is never serialized"
    );
    assert_eq!(found.scram, None, "a key made without a verifier has none");

    // A key with its SCRAM verifier (the PostgreSQL endpoint's SCRAM logins).
    let verifier = sluice_core::keys::ScramVerifier::generate("sk_dddddddddd_x").to_string();
    let with_scram = store
        .create_key_with_scram(
            key("pg", "dddddddddd", Role::Viewer, Some("demo")),
            Some(verifier.clone()),
        )
        .await
        .unwrap();
    assert_eq!(with_scram.scram.as_deref(), Some(verifier.as_str()));
    let found_scram = store.key_by_prefix("dddddddddd").await.unwrap().unwrap();
    assert_eq!(found_scram.scram.as_deref(), Some(verifier.as_str()));
    assert!(
        serde_json::to_value(&found_scram)
            .unwrap()
            .get("scram")
            .is_none(),
        "the verifier is never serialized"
    );
    assert!(store.revoke_key("dddddddddd").await.unwrap());

    store.touch_key("bbbbbbbbbb").await.unwrap();
    let touched = store.key_by_prefix("bbbbbbbbbb").await.unwrap().unwrap();
    assert!(touched.last_used_at.is_some_and(|t| t >= found.created_at));

    assert_eq!(store.list_keys(None).await.unwrap().len(), 2);
    let in_demo = store.list_keys(Some("demo")).await.unwrap();
    assert_eq!(
        in_demo
            .iter()
            .map(|k| k.prefix.as_str())
            .collect::<Vec<_>>(),
        ["bbbbbbbbbb"]
    );
    assert_eq!(
        store.list_keys(Some("ghost")).await.unwrap_err().code,
        Code::WorkspaceNotFound
    );

    assert!(store.revoke_key("bbbbbbbbbb").await.unwrap());
    assert!(
        !store.revoke_key("bbbbbbbbbb").await.unwrap(),
        "revoking twice reports nothing revoked"
    );
    assert_eq!(store.key_by_prefix("bbbbbbbbbb").await.unwrap(), None);
    assert_eq!(store.list_keys(None).await.unwrap().len(), 1);
    assert!(store.list_keys(Some("demo")).await.unwrap().is_empty());
    // A revoked prefix may be issued again.
    store
        .create_key(key("ci2", "bbbbbbbbbb", Role::Viewer, Some("demo")))
        .await
        .unwrap();
    assert_eq!(
        store
            .key_by_prefix("bbbbbbbbbb")
            .await
            .unwrap()
            .unwrap()
            .name,
        "ci2"
    );
}

async fn source_configs_are_sealed_at_rest_and_granted(env: Env) {
    let store = env.open().await;
    store.create_workspace("demo").await.unwrap();
    store.create_workspace("finance").await.unwrap();
    let secret = "Pw-Zq81x-very-secret";
    let config = json!({"url": format!("postgres://reader:{secret}@db.internal/warehouse")});
    let saved = store
        .upsert_source("warehouse_probe", "postgres", &config)
        .await
        .unwrap();
    assert_eq!(saved.config, config);
    assert!(saved.workspaces.is_empty());
    assert!(
        !format!("{saved:?}").contains(secret),
        "Debug output must not show credentials"
    );
    assert!(
        !serde_json::to_string(&saved).unwrap().contains(secret),
        "serialized records must not show credentials"
    );

    let raw = env
        .raw_scalar(
            "SELECT config FROM sources WHERE name = $1",
            "warehouse_probe",
        )
        .await;
    assert!(raw.starts_with("v1:"), "sealed format: {raw}");
    assert!(
        !raw.contains(secret) && !raw.contains("reader") && !raw.contains("url"),
        "clear config in the column: {raw}"
    );
    if let Some(dir) = &env.dir {
        // Every byte SQLite wrote (main file and WAL): the name is there, the secret is not.
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
            bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        assert!(
            contains(&bytes, b"warehouse_probe"),
            "scan sanity check: the source name is in the files"
        );
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "the secret is in the SQLite files in clear"
        );
    }

    store.grant_source("warehouse_probe", "demo").await.unwrap();
    store.grant_source("warehouse_probe", "demo").await.unwrap();
    store
        .grant_source("warehouse_probe", "finance")
        .await
        .unwrap();
    assert_eq!(
        store.grant_source("ghost", "demo").await.unwrap_err().code,
        Code::SourceNotFound
    );
    assert_eq!(
        store
            .grant_source("warehouse_probe", "ghost")
            .await
            .unwrap_err()
            .code,
        Code::WorkspaceNotFound
    );

    let other = json!({"path": "/data/files.db"});
    store
        .upsert_source("files", "sqlite", &other)
        .await
        .unwrap();
    store.grant_source("files", "finance").await.unwrap();

    // Re-saving replaces the config and keeps the grants.
    let rotated = json!({"url": "postgres://reader:rotated@db.internal/warehouse"});
    let updated = store
        .upsert_source("warehouse_probe", "postgres", &rotated)
        .await
        .unwrap();
    assert_eq!(updated.config, rotated);
    assert_eq!(updated.workspaces, ["demo", "finance"]);
    assert_eq!(updated.created_at, saved.created_at);

    let all = store.list_sources().await.unwrap();
    assert_eq!(
        all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["files", "warehouse_probe"]
    );
    assert_eq!(all[0].config, other);
    let demo: Vec<_> = store
        .sources_for_workspace("demo")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(demo, ["warehouse_probe"]);
    assert_eq!(
        store.sources_for_workspace("finance").await.unwrap().len(),
        2
    );
    assert_eq!(
        store.sources_for_workspace("ghost").await.unwrap_err().code,
        Code::WorkspaceNotFound
    );
    assert_eq!(store.source("ghost").await.unwrap(), None);

    assert_eq!(
        store
            .upsert_source("bad", "postgres", &json!("a string"))
            .await
            .unwrap_err()
            .code,
        Code::BadRequest
    );
    assert_eq!(
        store
            .upsert_source("Bad Name", "postgres", &json!({}))
            .await
            .unwrap_err()
            .code,
        Code::InvalidName
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn a_wrong_master_key_is_refused(env: Env) {
    let store = env.open().await;
    store
        .upsert_source(
            "warehouse",
            "postgres",
            &json!({"url": "postgres://u:pw@h/db"}),
        )
        .await
        .unwrap();
    store.close().await;
    let err = Store::open(&env.url, [7; 32]).await.unwrap_err();
    assert_eq!(err.code, Code::Internal);
    assert!(
        err.message.contains("master key"),
        "the message names the cause: {}",
        err.message
    );
    // The right key still works.
    let store = env.open().await;
    assert_eq!(
        store.source("warehouse").await.unwrap().unwrap().config["url"],
        "postgres://u:pw@h/db"
    );
}

async fn deploys_number_revisions_and_roll_back(env: Env) {
    let store = env.open().await;
    store.create_workspace("demo").await.unwrap();

    let first = store
        .deploy("demo", vec![rev("sales", "s1"), rev("stock", "k1")])
        .await
        .unwrap();
    assert_eq!(
        first
            .iter()
            .map(|r| (r.feed.as_str(), r.number))
            .collect::<Vec<_>>(),
        [("sales", 1), ("stock", 1)]
    );
    assert_eq!(
        store
            .feed("demo", "sales")
            .await
            .unwrap()
            .unwrap()
            .live_revision,
        Some(1)
    );

    let second = store
        .deploy("demo", vec![rev("sales", "s2")])
        .await
        .unwrap();
    assert_eq!(second[0].number, 2);
    let live = store.live_revision("demo", "sales").await.unwrap().unwrap();
    assert_eq!((live.number, live.source.as_str()), (2, "s2"));
    assert_eq!(
        live, second[0],
        "what deploy returns is what the store reads back"
    );
    assert_eq!(
        store
            .live_revision("demo", "stock")
            .await
            .unwrap()
            .unwrap()
            .number,
        1,
        "other feeds keep their live revision"
    );

    let revs = store.list_revisions("demo", "sales").await.unwrap();
    assert_eq!(
        revs.iter().map(|r| r.number).collect::<Vec<_>>(),
        [2, 1],
        "newest first"
    );
    assert_eq!(
        store
            .revision("demo", "sales", 1)
            .await
            .unwrap()
            .unwrap()
            .source,
        "s1"
    );
    assert_eq!(store.revision("demo", "sales", 9).await.unwrap(), None);

    // Rollback moves the live pointer; revisions stay as they were.
    let back = store.set_live("demo", "sales", 1).await.unwrap();
    assert_eq!((back.number, back.source.as_str()), (1, "s1"));
    assert_eq!(
        store
            .live_revision("demo", "sales")
            .await
            .unwrap()
            .unwrap()
            .number,
        1
    );
    assert_eq!(
        store.list_revisions("demo", "sales").await.unwrap().len(),
        2
    );
    assert_eq!(
        store.set_live("demo", "sales", 9).await.unwrap_err().code,
        Code::RevisionNotFound
    );
    assert_eq!(
        store.set_live("demo", "ghost", 1).await.unwrap_err().code,
        Code::FeedNotFound
    );
    assert_eq!(
        store
            .live_revision("demo", "sales")
            .await
            .unwrap()
            .unwrap()
            .number,
        1,
        "a failed set_live changes nothing"
    );

    // A deploy after a rollback takes the next number, not live + 1.
    assert_eq!(
        store
            .deploy("demo", vec![rev("sales", "s3")])
            .await
            .unwrap()[0]
            .number,
        3
    );

    let feeds = store.list_feeds("demo").await.unwrap();
    let summary: Vec<_> = feeds
        .iter()
        .map(|(f, r)| {
            (
                f.name.as_str(),
                f.live_revision,
                r.as_ref().map(|r| r.number),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("sales", Some(3), Some(3)), ("stock", Some(1), Some(1))]
    );
    assert_eq!(
        store.list_feeds("ghost").await.unwrap_err().code,
        Code::WorkspaceNotFound
    );
    assert_eq!(
        store
            .list_revisions("demo", "ghost")
            .await
            .unwrap_err()
            .code,
        Code::FeedNotFound
    );

    store.create_workspace("other").await.unwrap();
    store
        .deploy("other", vec![rev("sales", "o1")])
        .await
        .unwrap();
    let all: Vec<_> = store
        .all_live_revisions()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.workspace, r.feed, r.number))
        .collect();
    assert_eq!(
        all,
        [
            ("demo".into(), "sales".into(), 3),
            ("demo".into(), "stock".into(), 1),
            ("other".into(), "sales".into(), 1)
        ]
    );

    let dup = store
        .deploy("demo", vec![rev("sales", "a"), rev("sales", "b")])
        .await
        .unwrap_err();
    assert_eq!(dup.code, Code::BadRequest);
    assert_eq!(
        store.deploy("demo", vec![]).await.unwrap_err().code,
        Code::BadRequest
    );
}

async fn a_failing_deploy_leaves_nothing_behind(env: Env) {
    let store = env.open().await;
    let err = store
        .deploy("ghost", vec![rev("sales", "s1")])
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::WorkspaceNotFound);

    store.create_workspace("demo").await.unwrap();
    store
        .deploy("demo", vec![rev("sales", "s1")])
        .await
        .unwrap();
    // The second item fails after the first one's rows were written inside the transaction:
    // none of them may survive.
    let err = store
        .deploy(
            "demo",
            vec![
                rev("sales", "s2"),
                rev("fresh", "f1"),
                rev("Not-A-Name", "x"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidName);
    assert_eq!(
        store.feed("demo", "fresh").await.unwrap(),
        None,
        "a feed created by the failed deploy survived"
    );
    assert_eq!(
        store.list_revisions("demo", "sales").await.unwrap().len(),
        1,
        "a revision of the failed deploy survived"
    );
    assert_eq!(
        store
            .live_revision("demo", "sales")
            .await
            .unwrap()
            .unwrap()
            .number,
        1
    );
    assert_eq!(env.raw_count("SELECT COUNT(*) FROM revisions").await, 1);
    assert_eq!(env.raw_count("SELECT COUNT(*) FROM feeds").await, 1);
    // And the store is still usable: the next deploy takes number 2.
    assert_eq!(
        store
            .deploy("demo", vec![rev("sales", "s2")])
            .await
            .unwrap()[0]
            .number,
        2
    );
}

async fn concurrent_deploys_of_one_feed_get_distinct_numbers(env: Env) {
    let store = env.open().await;
    store.create_workspace("demo").await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .deploy("demo", vec![rev("sales", &format!("c{i}"))])
                    .await
            })
        })
        .collect();
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap().expect("concurrent deploys all succeed")[0].number);
    }
    numbers.sort();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
    // Deploys of one feed are serialized, so the last to commit took the highest number
    // and left it live.
    let feed = store.feed("demo", "sales").await.unwrap().unwrap();
    assert_eq!(feed.live_revision, Some(8));
}

async fn deleting_a_feed_removes_its_revisions_and_invocations(env: Env) {
    let store = env.open().await;
    store.create_workspace("demo").await.unwrap();
    store
        .deploy("demo", vec![rev("sales", "s1"), rev("stock", "k1")])
        .await
        .unwrap();
    let s2 = store
        .deploy("demo", vec![rev("sales", "s2")])
        .await
        .unwrap()
        .remove(0);
    store
        .record_invocations(&[inv("sales", 1), inv("sales", 2), inv("stock", 1)])
        .await
        .unwrap();
    let now = chrono::DateTime::from_timestamp_millis(28_333_334 * 60_000).unwrap();
    let stock_id = store
        .revision("demo", "stock", 1)
        .await
        .unwrap()
        .unwrap()
        .id;
    store
        .record_feed_minutes(
            "replica-a",
            &[
                minute(s2.id, now, &[2.0, 3.0], 0),
                minute(stock_id, now, &[1.0], 0),
            ],
        )
        .await
        .unwrap();

    assert!(store.delete_feed("demo", "sales").await.unwrap());
    assert!(!store.delete_feed("demo", "sales").await.unwrap());
    assert!(!store.delete_feed("ghost", "stock").await.unwrap());
    assert_eq!(store.feed("demo", "sales").await.unwrap(), None);
    assert_eq!(store.revision("demo", "sales", 1).await.unwrap(), None);
    assert_eq!(
        env.raw_count("SELECT COUNT(*) FROM revisions").await,
        1,
        "only stock's revision is left"
    );
    assert_eq!(
        env.raw_count("SELECT COUNT(*) FROM invocations").await,
        1,
        "only stock's invocation is left"
    );
    assert_eq!(
        env.raw_count("SELECT COUNT(*) FROM feed_minutes").await,
        1,
        "only stock's traffic is left"
    );
    assert_eq!(
        store
            .invocations("demo", "stock", None, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // A feed deployed again under the same name starts afresh.
    assert_eq!(
        store
            .deploy("demo", vec![rev("sales", "n1")])
            .await
            .unwrap()[0]
            .number,
        1
    );
    assert!(
        store
            .invocations("demo", "sales", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A gateway that still counted calls of the deleted feed's revision flushes them after
    // the new feed exists: they are dropped, not counted as the new feed's.
    store
        .record_feed_minutes("replica-b", &[minute(s2.id, now, &[5.0; 7], 0)])
        .await
        .unwrap();
    let t = store
        .feed_traffic(
            "demo",
            "sales",
            now,
            now + chrono::TimeDelta::minutes(1),
            chrono::TimeDelta::minutes(1),
        )
        .await
        .unwrap();
    assert_eq!((t.total.requests, t.oldest_record), (0, None));
}

async fn feed_links_are_hashed_scoped_revoked_and_go_with_their_feed(env: Env) {
    let store = env.open().await;
    store.create_workspace("demo").await.unwrap();
    store.create_workspace("other").await.unwrap();
    store
        .deploy("demo", vec![rev("sales", "s1"), rev("stock", "k1")])
        .await
        .unwrap();
    store
        .deploy("other", vec![rev("sales", "o1")])
        .await
        .unwrap();
    let link = |ws: &str, feed: &str, name: &str| {
        let t = sluice_core::keys::generate_link();
        (
            t.secret,
            NewLink {
                workspace: ws.into(),
                feed: feed.into(),
                name: name.into(),
                prefix: t.prefix,
                hash: t.hash,
                created_by: "alice".into(),
            },
        )
    };

    let (token, new) = link("demo", "sales", "finance dashboard");
    let created = store.create_link(new.clone()).await.unwrap();
    assert_eq!(
        (created.workspace.as_str(), created.feed.as_str()),
        ("demo", "sales")
    );
    assert_eq!(created.revoked_at, None);
    assert!(
        serde_json::to_value(&created)
            .unwrap()
            .get("hash")
            .is_none(),
        "the hash is never serialized"
    );
    let stored_hash = env
        .raw_scalar(
            "SELECT hash FROM feed_links WHERE prefix = $1",
            &created.prefix,
        )
        .await;
    assert_eq!(stored_hash, sluice_core::keys::hash(&token));
    assert_ne!(stored_hash, token, "the token itself is never stored");
    assert_eq!(
        store.create_link(new).await.unwrap_err().code,
        Code::AlreadyExists
    );
    let (_, ghost) = link("demo", "ghost", "x");
    assert_eq!(
        store.create_link(ghost).await.unwrap_err().code,
        Code::FeedNotFound
    );

    let (_, stock) = link("demo", "stock", "ops");
    let stock = store.create_link(stock).await.unwrap();
    let (_, theirs) = link("other", "sales", "theirs");
    let theirs = store.create_link(theirs).await.unwrap();

    let found = store
        .link_by_prefix(&created.prefix)
        .await
        .unwrap()
        .expect("found by prefix");
    assert_eq!(found, created);
    assert_eq!(store.link_by_prefix("nosuchlink").await.unwrap(), None);

    let names = |v: Vec<sluice_store::LinkRecord>| -> Vec<String> {
        v.into_iter().map(|l| l.name).collect()
    };
    assert_eq!(
        names(store.list_links("demo", None).await.unwrap()),
        ["finance dashboard", "ops"]
    );
    assert_eq!(
        names(store.list_links("demo", Some("stock")).await.unwrap()),
        ["ops"]
    );
    assert_eq!(
        store.list_links("ghost", None).await.unwrap_err().code,
        Code::WorkspaceNotFound
    );
    assert_eq!(
        store
            .list_links("demo", Some("ghost"))
            .await
            .unwrap_err()
            .code,
        Code::FeedNotFound
    );

    store.touch_link(&created.prefix).await.unwrap();
    let touched = store
        .link_by_prefix(&created.prefix)
        .await
        .unwrap()
        .unwrap();
    assert!(
        touched
            .last_used_at
            .is_some_and(|t| t >= created.created_at)
    );

    // Revoking is scoped to the workspace: another workspace's link is left alone.
    assert!(!store.revoke_link("demo", &theirs.prefix).await.unwrap());
    assert!(store.revoke_link("demo", &created.prefix).await.unwrap());
    assert!(
        !store.revoke_link("demo", &created.prefix).await.unwrap(),
        "revoking twice reports nothing revoked"
    );
    let revoked = store
        .link_by_prefix(&created.prefix)
        .await
        .unwrap()
        .unwrap();
    assert!(
        revoked.revoked_at.is_some(),
        "a revoked link is still found"
    );
    assert_eq!(
        names(store.list_links("demo", None).await.unwrap()),
        ["ops"]
    );
    assert!(
        store
            .link_by_prefix(&theirs.prefix)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );

    // Deleting a feed deletes its links: a new feed of the same name is not opened by them.
    assert!(store.delete_feed("demo", "stock").await.unwrap());
    assert_eq!(store.link_by_prefix(&stock.prefix).await.unwrap(), None);
}

async fn invocations_are_batched_paged_and_pruned(env: Env) {
    let store = env.open().await;
    store.create_workspace("demo").await.unwrap();
    store
        .deploy("demo", vec![rev("sales", "s1"), rev("stock", "k1")])
        .await
        .unwrap();

    let batch: Vec<_> = (1..=25)
        .map(|n| inv(if n % 2 == 0 { "stock" } else { "sales" }, n))
        .collect();
    // A record of a feed that is gone is dropped without failing the batch.
    let mut with_orphan = batch.clone();
    with_orphan.push(inv("deleted_meanwhile", 99));
    store.record_invocations(&with_orphan).await.unwrap();
    store.record_invocations(&[]).await.unwrap();

    // None: the latest `limit`, oldest first.
    let sales_ns: Vec<i64> = (1..=25).filter(|n| n % 2 == 1).collect(); // 13 records
    let last5 = store.invocations("demo", "sales", None, 5).await.unwrap();
    assert_eq!(
        last5.iter().map(|i| i.record.rows / 10).collect::<Vec<_>>(),
        sales_ns[8..]
    );
    assert!(last5.windows(2).all(|w| w[0].id < w[1].id));

    // Fields come back as written.
    let first = &store
        .invocations("demo", "sales", Some(0), 1)
        .await
        .unwrap()[0];
    let expected = inv("sales", 1);
    assert_eq!(
        (
            first.record.workspace.as_str(),
            first.record.feed.as_str(),
            first.record.revision,
            first.record.request_id.as_str()
        ),
        ("demo", "sales", 1, "req-sales-1")
    );
    assert_eq!(
        (
            first.record.status,
            first.record.duration_ms,
            first.record.rows
        ),
        (expected.status, expected.duration_ms, expected.rows)
    );
    assert_eq!(
        (
            &first.record.error_code,
            &first.record.stdout,
            &first.record.params,
            first.record.at
        ),
        (&None, &expected.stdout, &expected.params, expected.at)
    );
    let failed = store
        .invocations("demo", "sales", Some(0), 100)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.record.status == 500)
        .unwrap();
    assert_eq!(failed.record.error_code.as_deref(), Some("feed_raised"));

    // after_id paging walks everything, oldest first, without gaps or repeats.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .invocations("demo", "sales", cursor.or(Some(0)), 4)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|i| i.id);
        seen.extend(page.into_iter().map(|i| i.record.rows / 10));
    }
    assert_eq!(seen, sales_ns);
    assert!(
        store
            .invocations("demo", "sales", cursor, 4)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .invocations("demo", "ghost", None, 4)
            .await
            .unwrap_err()
            .code,
        Code::FeedNotFound
    );

    // Pruning keeps the newest N per feed.
    let deleted = store.prune_invocations(3).await.unwrap();
    assert_eq!(deleted, (13 - 3) + (12 - 3));
    let kept = store.invocations("demo", "sales", None, 100).await.unwrap();
    assert_eq!(
        kept.iter().map(|i| i.record.rows / 10).collect::<Vec<_>>(),
        sales_ns[10..]
    );
    assert_eq!(
        store
            .invocations("demo", "stock", None, 100)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(store.prune_invocations(3).await.unwrap(), 0);
    assert_eq!(
        store.prune_invocations(-1).await.unwrap_err().code,
        Code::BadRequest
    );
}

/// A replica's counts of `revision_id`'s calls in `minute`, which took `latencies` ms;
/// `errors` of them answered 5xx.
fn minute(
    revision_id: i64,
    minute: chrono::DateTime<chrono::Utc>,
    latencies: &[f64],
    errors: i64,
) -> MinuteCounts {
    let mut latency = [0; LATENCY_BUCKETS];
    for &ms in latencies {
        latency[latency_bucket(ms)] += 1;
    }
    MinuteCounts {
        revision_id,
        minute,
        requests: latencies.len() as i64,
        errors,
        client_errors: 0,
        latency,
        latency_max_ms: latencies.iter().copied().fold(0.0, f64::max),
    }
}

async fn traffic_minutes_add_up_over_replicas_and_revisions_without_double_counting(env: Env) {
    let store = env.open().await;
    store.create_workspace("demo").await.unwrap();
    let first = store
        .deploy("demo", vec![rev("sales", "s1"), rev("stock", "k1")])
        .await
        .unwrap();
    let (sales1, stock1) = (first[0].id, first[1].id);
    let sales2 = store
        .deploy("demo", vec![rev("sales", "s2")])
        .await
        .unwrap()[0]
        .id;
    const MIN: i64 = 60_000;
    let t0: i64 = 28_333_334 * MIN; // a whole minute
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap();

    // Minute 0: twenty calls, each at the upper bound of a latency bucket of its own, so
    // the estimated percentiles are exact: two replicas served them (15 and 5), one failed
    // in the feed and one was refused (429).
    let bounds = &LATENCY_BOUNDS_MS[..20];
    let mut a0 = minute(sales1, at(t0), &bounds[..15], 1);
    a0.client_errors = 1;
    let b0 = minute(sales1, at(t0), &bounds[15..], 0);
    // Replica a flushed an earlier snapshot of minute 0 first.
    let early = minute(sales1, at(t0), &bounds[..4], 0);
    store
        .record_feed_minutes("replica-a", std::slice::from_ref(&early))
        .await
        .unwrap();
    // Minute 1: idle. Minute 2: a call of revision 2, which timed out.
    let a2 = minute(sales2, at(t0 + 2 * MIN), &[300.0], 1);
    // Outside the window (just before it, and at its exclusive end), and another feed.
    let before = minute(sales1, at(t0 - MIN), &[1000.0], 0);
    let after = minute(sales1, at(t0 + 3 * MIN), &[1000.0], 1);
    let stock = minute(stock1, at(t0), &[2.0], 0);
    store
        .record_feed_minutes("replica-a", &[a0.clone(), a2, before, after, stock])
        .await
        .unwrap();
    store
        .record_feed_minutes("replica-b", std::slice::from_ref(&b0))
        .await
        .unwrap();
    // A flush retried after its commit was lost writes the same counts again, and one that
    // arrives late with an older snapshot changes nothing: neither is counted twice.
    store
        .record_feed_minutes("replica-a", std::slice::from_ref(&a0))
        .await
        .unwrap();
    store
        .record_feed_minutes("replica-a", &[early])
        .await
        .unwrap();
    // Counts of a revision that is gone (its feed deleted meanwhile) are dropped.
    store
        .record_feed_minutes("replica-a", &[minute(sales2 + 1000, at(t0), &[1.0], 0)])
        .await
        .unwrap();
    store.record_feed_minutes("replica-a", &[]).await.unwrap();

    let one = chrono::TimeDelta::minutes(1);
    let t = store
        .feed_traffic("demo", "sales", at(t0), at(t0 + 3 * MIN), one)
        .await
        .unwrap();
    assert_eq!(
        (t.from, t.to, t.bucket_seconds),
        (at(t0), at(t0 + 3 * MIN), 60)
    );
    let bucket = |start, requests, errors, client_errors, p50: Option<f64>, p95: Option<f64>| {
        TrafficBucket {
            start: at(start),
            requests,
            errors,
            client_errors,
            p50_ms: p50,
            p95_ms: p95,
        }
    };
    assert_eq!(
        t.buckets,
        [
            // n = 20: nearest ranks ceil(10) = 10 and ceil(19) = 19.
            bucket(t0, 20, 1, 1, Some(bounds[9]), Some(bounds[18])),
            bucket(t0 + MIN, 0, 0, 0, None, None),
            bucket(t0 + 2 * MIN, 1, 1, 0, Some(300.0), Some(300.0)),
        ]
    );
    // Over the whole window (n = 21): ranks ceil(10.5) = 11 and ceil(19.95) = 20, which no
    // mix of the per-minute percentiles gives.
    assert_eq!(
        t.total,
        bucket(t0, 21, 2, 1, Some(bounds[10]), Some(bounds[19]))
    );
    assert_eq!(t.oldest_record, Some(at(t0 - MIN)));

    // Each feed counts only its own calls; a partial last bucket is still a bucket.
    let stock = store
        .feed_traffic("demo", "stock", at(t0), at(t0 + MIN + 1), one)
        .await
        .unwrap();
    assert_eq!(stock.buckets.len(), 2);
    assert_eq!(stock.total, bucket(t0, 1, 0, 0, Some(2.0), Some(2.0)));

    // Longer buckets add their minutes up.
    let by3 = store
        .feed_traffic("demo", "sales", at(t0), at(t0 + 3 * MIN), one * 3)
        .await
        .unwrap();
    assert_eq!(by3.buckets, std::slice::from_ref(&t.total));

    // A window with no calls is all zeros, not an error.
    let quiet = store
        .feed_traffic("demo", "sales", at(t0 + 10 * MIN), at(t0 + 25 * MIN), one)
        .await
        .unwrap();
    assert_eq!(quiet.buckets.len(), 15);
    assert!(
        quiet
            .buckets
            .iter()
            .all(|b| b.requests == 0 && b.p50_ms.is_none())
    );
    assert_eq!(quiet.total.requests, 0);

    // Pruning drops minutes older than the cutoff, of every feed.
    assert_eq!(store.prune_feed_minutes(at(t0)).await.unwrap(), 1);
    assert_eq!(store.prune_feed_minutes(at(t0)).await.unwrap(), 0);
    let t = store
        .feed_traffic("demo", "sales", at(t0), at(t0 + 3 * MIN), one)
        .await
        .unwrap();
    assert_eq!((t.total.requests, t.oldest_record), (21, Some(at(t0))));

    assert_eq!(
        store
            .feed_traffic("demo", "ghost", at(t0), at(t0 + MIN), one)
            .await
            .unwrap_err()
            .code,
        Code::FeedNotFound
    );
    for (from, to, bucket) in [
        (t0, t0 + 25 * 60 * MIN, one),
        (t0 + 1, t0 + MIN, one),
        (t0, t0 + MIN, chrono::TimeDelta::seconds(10)),
    ] {
        assert_eq!(
            store
                .feed_traffic("demo", "sales", at(from), at(to), bucket)
                .await
                .unwrap_err()
                .code,
            Code::BadRequest,
            "{from}..{to} by {bucket}"
        );
    }
    let e = store
        .record_feed_minutes("replica-a", &[minute(sales1, at(t0 + 1), &[1.0], 0)])
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::BadRequest, "counts are kept per whole minute");
}

#[test]
fn with_database_swaps_only_the_database() {
    assert_eq!(
        with_database("postgres://u@h:5432/postgres", "t1"),
        "postgres://u@h:5432/t1"
    );
    assert_eq!(
        with_database("postgres://u@h/postgres?sslmode=disable", "t1"),
        "postgres://u@h/t1?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "t1"), "postgres://u@h/t1");
}

async fn drafts_are_per_owner_and_workspace_and_replaced_on_save(env: Env) {
    let store = env.open().await;
    store.create_workspace("demo").await.unwrap();
    store.create_workspace("other").await.unwrap();
    assert!(store.list_drafts("demo", "alice").await.unwrap().is_empty());

    let first = store
        .save_draft("demo", "alice", "top", "top.py", "v1")
        .await
        .unwrap();
    assert_eq!((first.name.as_str(), first.source.as_str()), ("top", "v1"));
    assert_eq!(first.created_at, first.updated_at);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // Saving again replaces the source, keeps created_at and moves updated_at.
    let second = store
        .save_draft("demo", "alice", "top", "top.py", "v2")
        .await
        .unwrap();
    assert_eq!(second.source, "v2");
    assert_eq!(second.created_at, first.created_at);
    assert!(second.updated_at > first.updated_at);
    assert_eq!(env.raw_count("SELECT count(*) FROM drafts").await, 1);

    // Another author's draft of the same name, and the same author in another workspace,
    // are separate drafts.
    store
        .save_draft("demo", "bob", "top", "top.py", "bob's")
        .await
        .unwrap();
    store
        .save_draft("other", "alice", "top", "top.py", "elsewhere")
        .await
        .unwrap();
    store
        .save_draft("demo", "alice", "alpha", "alpha.py", "a")
        .await
        .unwrap();
    let mine: Vec<_> = store
        .list_drafts("demo", "alice")
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.name, d.source))
        .collect();
    assert_eq!(
        mine,
        vec![("alpha".into(), "a".into()), ("top".into(), "v2".into())]
    );
    assert_eq!(
        store
            .draft("demo", "bob", "top")
            .await
            .unwrap()
            .unwrap()
            .source,
        "bob's"
    );
    assert!(store.draft("demo", "carol", "top").await.unwrap().is_none());

    // Unknown workspaces are errors, not empty answers.
    let e = store
        .save_draft("nope", "alice", "top", "top.py", "x")
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::WorkspaceNotFound);
    assert_eq!(
        store.list_drafts("nope", "alice").await.unwrap_err().code,
        Code::WorkspaceNotFound
    );

    // Deleting touches one author's draft in one workspace only.
    assert!(store.delete_draft("demo", "alice", "top").await.unwrap());
    assert!(!store.delete_draft("demo", "alice", "top").await.unwrap());
    assert!(store.draft("demo", "bob", "top").await.unwrap().is_some());
    assert!(
        store
            .draft("other", "alice", "top")
            .await
            .unwrap()
            .is_some()
    );
}

/// runtime = kubernetes: a feed only the cluster has (GitOps) gets a store row the first
/// time it is served, one revision per name the cluster gives it (same name, same record),
/// and with them an invocation log (naming the cluster's revision) and traffic counts; it
/// stays out of listings, lookups by number and rollbacks; a deploy of the same name
/// through the API takes it over, numbering on; a feed the API deployed is never adopted.
async fn cluster_feeds_get_a_log_and_counts_but_stay_out_of_listings(env: Env) {
    let store = env.open().await;
    store.create_workspace("demo").await.unwrap();
    let a = store
        .cluster_revision("demo", "nightly", "3f2a9c1e7b44", &sig("nightly"))
        .await
        .unwrap()
        .expect("a feed only the cluster has");
    assert_eq!((a.number, a.source.as_str()), (1, ""));
    assert_eq!(a.signature, sig("nightly"));
    let again = store
        .cluster_revision("demo", "nightly", "3f2a9c1e7b44", &sig("nightly"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, a.id, "one record per revision name");
    let b = store
        .cluster_revision("demo", "nightly", "9", &sig("nightly"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.number, 2);

    assert!(store.list_feeds("demo").await.unwrap().is_empty());
    assert!(store.feed("demo", "nightly").await.unwrap().is_none());
    assert!(
        store
            .live_revision("demo", "nightly")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .revision("demo", "nightly", 1)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.set_live("demo", "nightly", 1).await.is_err());

    let mut call = inv("nightly", 1);
    call.revision = a.number;
    store.record_invocations(&[call]).await.unwrap();
    let log = store
        .invocations("demo", "nightly", None, 10)
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].revision_name.as_deref(), Some("3f2a9c1e7b44"));
    let json = serde_json::to_value(&log[0]).unwrap();
    assert_eq!(json["revision_name"], "3f2a9c1e7b44");
    assert_eq!(json["revision"], 1);

    const MIN: i64 = 60_000;
    let t0: i64 = 28_333_334 * MIN;
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap();
    store
        .record_feed_minutes("replica-a", &[minute(b.id, at(t0), &[1.0, 2.0], 0)])
        .await
        .unwrap();
    let t = store
        .feed_traffic(
            "demo",
            "nightly",
            at(t0),
            at(t0 + MIN),
            chrono::TimeDelta::minutes(1),
        )
        .await
        .unwrap();
    assert_eq!(t.total.requests, 2);

    // Deployed through the API: the store's feed now, its numbers after the cluster's.
    let deployed = store
        .deploy("demo", vec![rev("nightly", "n1")])
        .await
        .unwrap();
    assert_eq!(deployed[0].number, 3);
    assert_eq!(store.list_feeds("demo").await.unwrap().len(), 1);
    assert_eq!(
        store
            .invocations("demo", "nightly", None, 10)
            .await
            .unwrap()
            .len(),
        1,
        "its log stays"
    );
    assert!(
        store
            .cluster_revision("demo", "nightly", "other", &sig("nightly"))
            .await
            .unwrap()
            .is_none(),
        "a feed the API deployed is not the cluster's to record"
    );
}
