//! OData v4 end to end, against the real binary: the `$metadata` document validates against
//! the OASIS CSDL schemas, Power Query's requests replay with its exact headers, query
//! options give the same rows as the same query in SQL, and real OData clients read whole
//! feeds page by page.
//!
//! Needs `xmllint` (Debian `libxml2-utils`) and the PyPI package `python-odata`;
//! `.ci/run` installs both.

mod common;

use common::{ADMIN_KEY, Opts, Server};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Power Query's OData.Feed request headers (Power BI Desktop / Excel).
const PQ_ACCEPT: &str = "application/json;odata.metadata=minimal;q=1.0,application/json;odata=minimalmetadata;q=0.9,application/atomsvc+xml;q=0.8,application/atom+xml;q=0.8,application/xml;q=0.7,text/plain;q=0.7";

/// A request with Power Query's exact headers.
fn power_query_request(server: &Server, path: &str) -> reqwest::blocking::RequestBuilder {
    reqwest::blocking::Client::new()
        .get(format!("{}{path}", server.url))
        .basic_auth("", Some(ADMIN_KEY))
        .header(
            "User-Agent",
            "Microsoft.Data.Mashup (https://go.microsoft.com/fwlink/?LinkID=304225)",
        )
        .header("OData-MaxVersion", "4.0")
        .header("MaxDataServiceVersion", "3.0")
        .header("Accept", PQ_ACCEPT)
}

fn power_query(server: &Server, path: &str) -> reqwest::blocking::Response {
    power_query_request(server, path).send().unwrap()
}

fn one_odata_version(r: &reqwest::blocking::Response) {
    let v: Vec<_> = r.headers().get_all("odata-version").iter().collect();
    assert_eq!(v.len(), 1, "exactly one OData-Version header: {v:?}");
    assert_eq!(v[0], "4.0");
}

const ROWS_FEED: &str = r#"
from datetime import date
import sluice

@sluice.feed(key=["id"])
def sales_rows(until: date = date(2024, 3, 1)):
    """Raw sales rows before a day, with their rowid as key."""
    return sluice.sql("warehouse",
        "select rowid as id, day, region, channel, product_id, units, amount from sales where day < :until order by rowid",
        until=until)
"#;

#[test]
fn metadata_validates_and_power_query_requests_replay() {
    let server = Server::start(Opts::default());
    let (status, body) = server
        .http()
        .deploy(ADMIN_KEY, "demo", "sales_rows.py", ROWS_FEED);
    assert_eq!(status, 201, "{body}");

    // The service document, as Power Query asks for it first.
    let r = power_query(&server, "/odata/demo/");
    assert_eq!(r.status(), 200);
    one_odata_version(&r);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        ct.starts_with("application/json;odata.metadata=minimal"),
        "{ct}"
    );
    let doc: Value = r.json().unwrap();
    assert_eq!(
        doc["@odata.context"],
        format!("{}/odata/demo/$metadata", server.url)
    );
    let names: Vec<&str> = doc["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for feed in ["hello", "sales_by_region", "sales_rows"] {
        assert!(names.contains(&feed), "{feed} in {names:?}");
    }

    // $metadata is XML whatever the Accept header prefers, and valid CSDL.
    let r = power_query(&server, "/odata/demo/$metadata");
    assert_eq!(r.status(), 200);
    one_odata_version(&r);
    assert_eq!(r.headers()["content-type"], "application/xml");
    let xml = r.text().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metadata.xml");
    std::fs::write(&file, &xml).unwrap();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/odata/edmx.xsd");
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema)
        .arg(&file)
        .output()
        .expect("xmllint runs (Debian package libxml2-utils; .ci/run installs it)");
    assert!(
        out.status.success(),
        "$metadata does not validate against the OASIS CSDL schema:\n{}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The declared key is used; other feeds get the generated row number; no annotations.
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let key_of = |set: &str| -> Vec<String> {
        let et = doc
            .descendants()
            .find(|n| n.has_tag_name("EntityType") && n.attribute("Name") == Some(set))
            .unwrap_or_else(|| panic!("EntityType {set} in {xml}"));
        et.descendants()
            .filter(|n| n.has_tag_name("PropertyRef"))
            .map(|n| n.attribute("Name").unwrap().to_string())
            .collect()
    };
    assert_eq!(key_of("sales_rows"), ["id"]);
    assert_eq!(key_of("sales_by_region"), ["_row"]);
    assert!(!xml.contains("Annotation"));
    let prop_type = |set: &str, prop: &str| -> String {
        doc.descendants()
            .find(|n| n.has_tag_name("EntityType") && n.attribute("Name") == Some(set))
            .unwrap()
            .children()
            .find(|n| n.has_tag_name("Property") && n.attribute("Name") == Some(prop))
            .and_then(|n| n.attribute("Type"))
            .unwrap_or_else(|| panic!("{set}.{prop}"))
            .to_string()
    };
    assert_eq!(prop_type("sales_rows", "id"), "Edm.Int64");
    assert_eq!(prop_type("sales_rows", "day"), "Edm.Date");
    assert_eq!(prop_type("sales_rows", "amount"), "Edm.Double");
    assert_eq!(prop_type("sales_rows", "region"), "Edm.String");

    // The entity set, with a feed parameter as a custom query option and a page size.
    let r = power_query_request(&server, "/odata/demo/sales_by_region?region=APAC&$top=3")
        .header("Prefer", "odata.maxpagesize=2")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    one_odata_version(&r);
    assert_eq!(r.headers()["preference-applied"], "odata.maxpagesize=2");
    let page: Value = r.json().unwrap();
    assert_eq!(
        page["@odata.context"],
        format!("{}/odata/demo/$metadata#sales_by_region", server.url)
    );
    let rows = page["value"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["region"] == "APAC"));
    assert_eq!(rows[0]["_row"], 1);
    let next = page["@odata.nextLink"].as_str().expect("a next link");
    assert!(
        next.starts_with(&format!("{}/odata/demo/sales_by_region?", server.url)),
        "{next}"
    );
    assert!(
        next.contains("region=APAC") && next.contains("$top=3"),
        "keeps the parameters: {next}"
    );
    let r = reqwest::blocking::Client::new()
        .get(next)
        .basic_auth("", Some(ADMIN_KEY))
        .header("Prefer", "odata.maxpagesize=2")
        .send()
        .unwrap();
    let page: Value = r.json().unwrap();
    assert_eq!(
        page["value"].as_array().unwrap().len(),
        1,
        "$top=3 ends on the second page"
    );
    assert_eq!(page["value"][0]["_row"], 3);
    assert!(page.get("@odata.nextLink").is_none());

    // Without credentials: the Basic challenge that makes Excel and Power BI ask for a key.
    let r = reqwest::blocking::get(format!("{}/odata/demo/$metadata", server.url)).unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    one_odata_version(&r);

    // Options we do not implement are refused by name, never ignored.
    for (q, status, needle) in [
        ("$expand=x", 501, "$expand"),
        ("$search=x", 501, "$search"),
        ("$apply=groupby((region))", 501, "$apply"),
        ("$filter=units%20add%201%20gt%202", 501, "'add'"),
        ("$filter=substring(region,1)%20eq%20'x'", 501, "substring"),
        ("$frobnicate=1", 400, "$frobnicate"),
        ("$top=-1", 400, "$top"),
        ("$filter=region%20eq", 400, "$filter"),
        ("$filter=nope%20eq%201", 400, "'nope'"),
        ("$filter=units%20eq%20'x'", 400, "cannot compare"),
        ("$orderby=nope", 400, "'nope'"),
        ("$select=nope", 400, "'nope'"),
        ("until=yesterday", 400, "until"),
    ] {
        let r = power_query(&server, &format!("/odata/demo/sales_rows?{q}"));
        assert_eq!(r.status().as_u16(), status, "{q}");
        one_odata_version(&r);
        let body: Value = r.json().unwrap();
        let msg = body["detail"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{q}: {body}");
        assert_eq!(
            body["error"]["message"], body["detail"],
            "OData clients read error.message"
        );
    }
    server.stop();
}

/// Rows of an OData response as comparable tuples.
fn tuples(rows: &[Value]) -> Vec<(i64, String, String, String, i64, i64, f64)> {
    rows.iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["day"].as_str().unwrap().to_string(),
                r["region"].as_str().unwrap().to_string(),
                r["channel"].as_str().unwrap().to_string(),
                r["product_id"].as_i64().unwrap(),
                r["units"].as_i64().unwrap(),
                r["amount"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn filter_orderby_top_and_skip_match_the_same_query_in_sql() {
    let server = Server::start(Opts::default());
    let (status, body) = server
        .http()
        .deploy(ADMIN_KEY, "demo", "sales_rows.py", ROWS_FEED);
    assert_eq!(status, 201, "{body}");
    let warehouse = server.data_dir.join("warehouse.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = rt
        .block_on(sqlx::SqlitePool::connect(&format!(
            "sqlite://{}?mode=ro",
            warehouse.display()
        )))
        .unwrap();
    let base = "select rowid as id, day, region, channel, product_id, units, amount from sales where day < '2024-03-01'";
    let cases: &[(&str, &str)] = &[
        (
            "$filter=region eq 'EU' and channel ne 'online'&$orderby=amount desc,id&$top=7",
            "region = 'EU' and channel <> 'online' order by amount desc, id limit 7",
        ),
        (
            "$filter=contains(channel,'art') or units le 2&$orderby=id&$skip=3&$top=5",
            "(instr(channel, 'art') > 0 or units <= 2) order by id limit 5 offset 3",
        ),
        (
            "$filter=day ge 2024-02-10 and not startswith(region,'A')&$orderby=day desc,id&$top=10",
            "day >= '2024-02-10' and region not like 'A%' order by day desc, id limit 10",
        ),
        (
            "$filter=day lt 2024-01-03T00:00:00Z and (units gt 100 or amount lt 50.5)&$orderby=units,id desc&$top=20",
            "day < '2024-01-03' and (units > 100 or amount < 50.5) order by units, id desc limit 20",
        ),
        (
            "$filter=endswith(region,'A') and tolower(channel) eq 'retail' and year(day) eq 2024 and month(day) eq 2&$orderby=product_id desc,id&$top=15&$skip=2",
            "region like '%A' and lower(channel) = 'retail' and day >= '2024-02-01' and day < '2024-03-01' order by product_id desc, id limit 15 offset 2",
        ),
    ];
    for (odata, sql) in cases {
        let q: String = form_urlencoded_pairs(odata);
        let r = server
            .http()
            .get_key(&format!("/odata/demo/sales_rows?{q}"), ADMIN_KEY);
        assert_eq!(r.status(), 200, "{odata}");
        let got: Value = r.json().unwrap();
        let got = tuples(got["value"].as_array().unwrap());
        let sql = format!("{base} and {sql}");
        let expected: Vec<(i64, String, String, String, i64, i64, f64)> =
            rt.block_on(sqlx::query_as(&sql).fetch_all(&pool)).unwrap();
        assert!(!expected.is_empty(), "the case must select rows: {sql}");
        assert_eq!(got, expected, "{odata}\n  vs {sql}");
    }

    // $count=true counts every match, whatever the page; /$count is the number alone.
    let (n,): (i64,) = rt
        .block_on(
            sqlx::query_as(&format!(
                "select count(*) from ({base}) where region = 'EU'"
            ))
            .fetch_one(&pool),
        )
        .unwrap();
    let r = server.http().get_key(
        &format!(
            "/odata/demo/sales_rows?{}",
            form_urlencoded_pairs("$filter=region eq 'EU'&$count=true&$top=1")
        ),
        ADMIN_KEY,
    );
    let page: Value = r.json().unwrap();
    assert_eq!(page["@odata.count"], n);
    assert_eq!(page["value"].as_array().unwrap().len(), 1);
    let r = server.http().get_key(
        &format!(
            "/odata/demo/sales_rows/$count?{}",
            form_urlencoded_pairs("$filter=region eq 'EU'")
        ),
        ADMIN_KEY,
    );
    assert_eq!(r.text().unwrap(), n.to_string());

    // A parameter changes the rows like on /feeds; $select narrows the properties.
    let r = server.http().get_key(
        &format!(
            "/odata/demo/sales_rows?{}",
            form_urlencoded_pairs("until=2024-01-02&$select=id,day&$orderby=id desc&$top=1")
        ),
        ADMIN_KEY,
    );
    let text = r.text().unwrap();
    assert!(
        text.contains(r#""value":[{"id":"#),
        "properties in $select order: {text}"
    );
    let page: Value = serde_json::from_str(&text).unwrap();
    let row = page["value"][0].as_object().unwrap();
    assert_eq!(row.len(), 2, "{text}");
    assert_eq!(row["day"], "2024-01-01");
    assert!(
        page["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#sales_rows(id,day)")
    );

    // $top stops reading the feed early on purpose: that is logged as a success, not as a
    // client that hung up (499). All 219,300 rows would take many batches; one is enough.
    let r = server.http().get_key(
        &format!(
            "/odata/demo/sales_rows?{}",
            form_urlencoded_pairs("until=2100-01-01&$top=1")
        ),
        ADMIN_KEY,
    );
    let page: Value = r.json().unwrap();
    assert_eq!(page["value"].as_array().unwrap().len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let logs = server
        .http()
        .get_key(
            "/api/v1/workspaces/demo/feeds/sales_rows/logs?limit=200",
            ADMIN_KEY,
        )
        .text()
        .unwrap();
    assert!(logs.contains(r#""status":200"#), "{logs}");
    assert!(!logs.contains(r#""status":499"#), "{logs}");
    server.stop();
}

/// `a=b c&d=e` with each value percent-encoded as a client would send it.
fn form_urlencoded_pairs(q: &str) -> String {
    q.split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            let enc: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z'
                    | b'a'..=b'z'
                    | b'0'..=b'9'
                    | b'-'
                    | b'_'
                    | b'.'
                    | b','
                    | b'\''
                    | b'('
                    | b')' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Run an OData client script against the demo workspace and check what it read against
/// the same feed read in one piece from `/feeds`.
fn client_reads_whole_feed(program: &str, script: &str, install_hint: &str) {
    let server = Server::start(Opts::default());
    let root = format!("{}/odata/demo/", server.url);
    let report = common::run_client(program, script, &[&root, ADMIN_KEY], install_hint);
    let all = server
        .http()
        .get_key("/feeds/demo/sales_by_region?region=EU", ADMIN_KEY);
    let all: Value = all.json().unwrap();
    let n = all.as_array().unwrap().len();
    assert_eq!(report["rows"], n, "{report}");
    // Pages of 100 rows: the client followed every nextLink.
    assert_eq!(report["pages"], n.div_ceil(100), "{report}");
    assert_eq!(report["first_day"], all[0]["day"]);
    server.stop();
}

#[test]
fn python_odata_reads_whole_feeds_following_next_links() {
    client_reads_whole_feed(
        "python3",
        "odata_python.py",
        "pip install python-odata; test.sh does",
    );
}

#[test]
fn odata_client_npm_reads_whole_feeds_following_next_links() {
    client_reads_whole_feed(
        "node",
        "odata_client.mjs",
        "npm ci in crates/sluice/tests/clients; test.sh does",
    );
}
