//! PostgreSQL, for real: as a data source feeds read from (natively and through
//! `sluice.connect`), and as the metadata store of `sluice server`. Each test creates a
//! throwaway database on the machine's PostgreSQL and drops it afterwards.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;

/// Base URL of a PostgreSQL we may create databases on.
fn pg_base() -> String {
    std::env::var("SLUICE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

struct TempDb {
    name: String,
}

impl TempDb {
    fn new(tag: &str) -> TempDb {
        let name = format!("sluice_{tag}_{}_{}", std::process::id(), rand_suffix());
        psql("postgres", &format!("create database {name}"));
        TempDb { name }
    }
    fn url(&self) -> String {
        format!("{}/{}", pg_base(), self.name)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &format!("{}/postgres", pg_base()),
                "-qc",
                &format!("drop database if exists {} with (force)", self.name),
            ])
            .output();
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql").args([&format!("{}/{db}", pg_base()), "-qAtc", sql]).output().expect(
        "psql is needed for the PostgreSQL tests; a PostgreSQL must accept user postgres on 127.0.0.1:5432 (or set SLUICE_TEST_PG_URL)",
    );
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const ORDERS: &str = r#"
import sluice

@sluice.feed
def orders(min_total: float = 0, status: list[str] = []):
    """Orders above a total, natively from PostgreSQL."""
    if status:
        return sluice.sql("shop", "select id, customer, total, placed_at, status from orders where total >= :min_total and status = any(:status) order by id", min_total=min_total, status=status)
    return sluice.sql("shop", "select id, customer, total, placed_at, status from orders where total >= :min_total order by id", min_total=min_total)

@sluice.feed
def order_count():
    """The same source through a DB-API connection in Python."""
    with sluice.connect("shop") as conn:
        cur = conn.cursor()
        cur.execute("select status, count(*) from orders group by status order by status")
        return [{"status": s, "n": n} for s, n in cur.fetchall()]
"#;

#[test]
fn a_postgresql_data_source_serves_natively_and_through_python() {
    let db = TempDb::new("src");
    psql(
        &db.name,
        "create table orders (id bigint primary key, customer text, total numeric(10,2), placed_at timestamptz, status text);
         insert into orders select i, 'customer ' || (i % 97), (i % 1000) / 10.0, timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute',
           (array['open','paid','shipped'])[1 + i % 3] from generate_series(1, 100000) i;",
    );
    let s = Server::start(Opts::default());
    let http = s.http();
    let home = tempfile::tempdir().unwrap();
    let out = s
        .cli(
            home.path(),
            ADMIN_KEY,
            &[
                "sources",
                "add",
                "shop",
                "--kind",
                "postgres",
                "--url",
                &db.url(),
                "--grant",
                "demo",
            ],
        )
        .ok();
    assert!(
        !out.stdout.contains("postgres://"),
        "credentials are never echoed: {out:?}"
    );
    let (st, sources) = http.json("/api/v1/sources", ADMIN_KEY);
    assert_eq!(st, 200);
    assert!(
        !sources.to_string().contains(&db.url()),
        "the API never returns credentials: {sources}"
    );

    let (st, p) = http.deploy(ADMIN_KEY, "demo", "orders.py", ORDERS);
    assert_eq!(st, 201, "{p}");

    let csv = http
        .get_key("/feeds/demo/orders?format=csv", ADMIN_KEY)
        .text()
        .unwrap();
    assert_eq!(csv.lines().count(), 100_001, "header + every row");
    assert_eq!(
        csv.lines().next().unwrap(),
        "id,customer,total,placed_at,status"
    );
    let rows: Vec<Value> = http
        .get_key("/feeds/demo/orders?min_total=99.5", ADMIN_KEY)
        .json()
        .unwrap();
    let expected: usize = psql(&db.name, "select count(*) from orders where total >= 99.5")
        .parse()
        .unwrap();
    assert_eq!(rows.len(), expected);
    assert!(
        rows[0]["placed_at"].as_str().unwrap().ends_with('Z'),
        "timestamptz is served in UTC: {}",
        rows[0]
    );
    let rows: Vec<Value> = http
        .get_key(
            "/feeds/demo/orders?min_total=99&status=paid,shipped",
            ADMIN_KEY,
        )
        .json()
        .unwrap();
    let expected: usize = psql(
        &db.name,
        "select count(*) from orders where total >= 99 and status in ('paid','shipped')",
    )
    .parse()
    .unwrap();
    assert_eq!(rows.len(), expected);
    // A value is a value, never SQL.
    let (st, rows) = http.json("/feeds/demo/orders?status=paid'%20or%20'1'='1", ADMIN_KEY);
    assert_eq!(st, 200);
    assert_eq!(rows.as_array().unwrap().len(), 0);

    let rows: Vec<Value> = http
        .get_key("/feeds/demo/order_count", ADMIN_KEY)
        .json()
        .unwrap();
    let total: i64 = rows.iter().map(|r| r["n"].as_i64().unwrap()).sum();
    assert_eq!(total, 100_000, "{rows:?}");
}

#[test]
fn sluice_server_keeps_its_metadata_in_postgresql() {
    let db = TempDb::new("meta");
    let master = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let opts = || Opts {
        subcommand: "server",
        args: vec!["--database-url".into(), db.url()],
        env: vec![("SLUICE_MASTER_KEY".into(), master.into())],
        wait_ready: true,
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Server::start_in(dir.clone(), None, opts());
    let http = s.http();
    let (st, p) = http.deploy(ADMIN_KEY, "demo", "hi.py", "import sluice\n\n@sluice.feed\ndef hi(n: int = 2):\n    return [{\"i\": i} for i in range(n)]\n");
    assert_eq!(st, 201, "{p}");
    let rows: Vec<Value> = http
        .get_key("/feeds/demo/hi?n=3", ADMIN_KEY)
        .json()
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(s.stop().success());
    assert_eq!(
        psql(&db.name, "select count(*) from revisions"),
        "1",
        "the revision is in PostgreSQL"
    );

    let s = Server::start_in(dir, Some(tmp), opts());
    let rows: Vec<Value> = s
        .http()
        .get_key("/feeds/demo/hi?n=4", ADMIN_KEY)
        .json()
        .unwrap();
    assert_eq!(rows.len(), 4);
}
