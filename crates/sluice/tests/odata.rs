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

const NUMBERS_FEED: &str = r#"
import sluice

@sluice.feed(key=["i"])
def numbers(n: int = 2500):
    """Numbers with a value that repeats, so an order by it needs the key to be total."""
    return [{"i": i, "sq": i * i % 97, "name": f"n{i}"} for i in range(n)]

@sluice.feed(cache="5m", key=["i"])
def cached_numbers(n: int = 700):
    """The same, declared cacheable."""
    return [{"i": i, "sq": i * i % 97} for i in range(n)]
"#;

/// Invocation records of a feed (after the recorder has written them).
fn invocations(server: &Server, feed: &str) -> Vec<Value> {
    std::thread::sleep(std::time::Duration::from_millis(700));
    let (status, logs) = server.http().json(
        &format!("/api/v1/workspaces/demo/feeds/{feed}/logs?limit=1000"),
        ADMIN_KEY,
    );
    assert_eq!(status, 200, "{logs}");
    logs.as_array().unwrap().clone()
}

/// A counter of `/metrics` for one feed (0 when absent).
fn metric(server: &Server, name: &str, feed: &str) -> u64 {
    let text = server
        .http()
        .get("/metrics")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let prefix = format!("{name}{{workspace=\"demo\",feed=\"{feed}\"");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// One page: its rows, its next link and its count.
fn page(url: &str, key: &str, size: Option<u64>) -> (u16, Value) {
    let mut r = reqwest::blocking::Client::new()
        .get(url)
        .basic_auth("", Some(key));
    if let Some(n) = size {
        r = r.header("Prefer", format!("odata.maxpagesize={n}"));
    }
    let r = r.send().unwrap();
    let status = r.status().as_u16();
    one_odata_version(&r);
    (status, r.json().unwrap())
}

/// Follow next links from `url` to the end; the rows and the number of pages.
fn read_all(url: &str, key: &str, size: u64) -> (Vec<Value>, usize, Vec<Value>) {
    let mut rows = Vec::new();
    let mut pages = 0;
    let mut bodies = Vec::new();
    let mut next = Some(url.to_string());
    while let Some(url) = next {
        let (status, body) = page(&url, key, Some(size));
        assert_eq!(status, 200, "{url}: {body}");
        let got = body["value"].as_array().unwrap();
        assert!(
            got.len() as u64 <= size,
            "a page holds at most maxpagesize rows"
        );
        rows.extend(got.iter().cloned());
        pages += 1;
        next = body["@odata.nextLink"].as_str().map(str::to_string);
        bodies.push(body);
        assert!(pages < 1000, "paging must end");
    }
    (rows, pages, bodies)
}

#[test]
fn paged_reads_call_the_feed_once_and_cursors_belong_to_their_key() {
    let server = Server::start(Opts::default());
    let (status, body) = server
        .http()
        .deploy(ADMIN_KEY, "demo", "numbers.py", NUMBERS_FEED);
    assert_eq!(status, 201, "{body}");
    let q = form_urlencoded_pairs("n=2000&$filter=sq lt 60&$orderby=sq desc,i&$select=i,sq");
    let url = format!("{}/odata/demo/numbers?{q}", server.url);

    // The whole result in one response, streamed.
    let (status, all) = page(&url, ADMIN_KEY, None);
    assert_eq!(status, 200, "{all}");
    let all = all["value"].as_array().unwrap().clone();
    assert!(all.len() > 500, "{}", all.len());
    assert_eq!(invocations(&server, "numbers").len(), 1);

    // Page by page: the pages together are the same rows, and the feed ran once more.
    let (rows, pages, bodies) = read_all(&url, ADMIN_KEY, 100);
    assert_eq!(rows, all);
    assert_eq!(pages, all.len().div_ceil(100));
    let next = bodies[0]["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.contains("n=2000")
            && next.contains("$select=i,sq")
            && next.contains("$skiptoken=100."),
        "{next}"
    );
    let calls = invocations(&server, "numbers");
    assert_eq!(
        calls.len(),
        2,
        "a paged read calls the feed once: {calls:?}"
    );
    assert!(calls.iter().all(|c| c["status"] == 200), "{calls:?}");
    assert_eq!(metric(&server, "sluice_feed_requests_total", "numbers"), 2);

    // $count=true with pages: the count of the whole result on every page, still one call.
    let counted = format!("{url}&$count=true&$top=950");
    let (rows, pages, bodies) = read_all(&counted, ADMIN_KEY, 300);
    assert_eq!(rows, all[..950]);
    assert_eq!(pages, 4);
    for b in &bodies {
        assert_eq!(b["@odata.count"], all.len(), "{b}");
    }
    assert_eq!(invocations(&server, "numbers").len(), 3);

    // A cursor belongs to the key that started the read: another key of the workspace
    // is refused, by name of the option and with what to do.
    let http = server.http();
    let (st, viewer) = http.post(
        "/api/v1/keys",
        ADMIN_KEY,
        serde_json::json!({"name": "excel", "role": "viewer", "workspace": "demo"}),
    );
    assert_eq!(st, 201, "{viewer}");
    let viewer = viewer["secret"].as_str().unwrap().to_string();
    let (_, first) = page(&url, ADMIN_KEY, Some(100));
    let next = first["@odata.nextLink"].as_str().unwrap().to_string();
    let (status, problem) = page(&next, &viewer, Some(100));
    assert_eq!(status, 403, "{problem}");
    assert_eq!(problem["code"], "forbidden");
    let msg = problem["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("another key") && msg.contains("without $skiptoken"),
        "{msg}"
    );
    // The viewer's own read works; the owner's link still works after the refusal.
    let (rows, _, _) = read_all(&url, &viewer, 500);
    assert_eq!(rows, all);
    let (status, second) = page(&next, ADMIN_KEY, Some(100));
    assert_eq!(status, 200);
    assert_eq!(second["value"].as_array().unwrap()[..], all[100..200]);
    // A token used with other query options is refused, not answered with wrong rows.
    let other = next.replace("sq%20lt%2060", "sq%20lt%2061");
    assert_ne!(other, next);
    let (status, problem) = page(&other, ADMIN_KEY, Some(100));
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("another query")
    );

    // An expired or unknown cursor: the feed runs again from that position, and the rows
    // are still the right ones (a new cursor carries the rest of the read).
    let before = invocations(&server, "numbers").len();
    let gone = format!("{url}&$skiptoken=250.{}", "0".repeat(32));
    let (rows, pages, bodies) = read_all(&gone, ADMIN_KEY, 100);
    assert_eq!(rows, all[250..]);
    assert_eq!(pages, (all.len() - 250).div_ceil(100));
    let relinked = bodies[0]["@odata.nextLink"].as_str().unwrap();
    assert!(
        relinked.contains("$skiptoken=350.") && !relinked.contains(&"0".repeat(32)),
        "{relinked}"
    );
    assert_eq!(invocations(&server, "numbers").len(), before + 1);
    // The bare numeric form of earlier versions still works, without a cursor.
    let tail = all.len() - 10;
    let (status, body) = page(&format!("{url}&$skiptoken={tail}"), ADMIN_KEY, None);
    assert_eq!(status, 200);
    assert_eq!(body["value"].as_array().unwrap()[..], all[tail..]);
    // Tokens this service never issues are refused by name.
    let (status, problem) = page(&format!("{url}&$skiptoken=abc"), ADMIN_KEY, Some(100));
    assert_eq!(status, 400, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("$skiptoken"));
    server.stop();
}

#[test]
fn odata_reads_use_the_feed_result_cache() {
    let server = Server::start(Opts::default());
    let (status, body) = server
        .http()
        .deploy(ADMIN_KEY, "demo", "numbers.py", NUMBERS_FEED);
    assert_eq!(status, 201, "{body}");
    let url = format!(
        "{}/odata/demo/cached_numbers?{}",
        server.url,
        form_urlencoded_pairs("$orderby=sq,i")
    );
    let (first, _, _) = read_all(&url, ADMIN_KEY, 250);
    assert_eq!(first.len(), 700);
    assert_eq!(
        metric(&server, "sluice_feed_cache_hits_total", "cached_numbers"),
        0
    );
    // Within the feed's cache=5m, another read (paged or not) does not call it.
    let (again, _, _) = read_all(&url, ADMIN_KEY, 100);
    assert_eq!(again, first);
    let (_, whole) = page(&url, ADMIN_KEY, None);
    assert_eq!(whole["value"].as_array().unwrap()[..], first[..]);
    assert_eq!(
        metric(&server, "sluice_feed_cache_hits_total", "cached_numbers"),
        2
    );
    // The cache is the one /feeds uses: the Arrow result is warm already.
    let r = server
        .http()
        .get("/feeds/demo/cached_numbers?format=arrow")
        .bearer_auth(ADMIN_KEY)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sluice-cache"], "hit");
    // Another parameter value is another entry.
    let (_, other) = page(
        &format!("{}/odata/demo/cached_numbers?n=3", server.url),
        ADMIN_KEY,
        None,
    );
    assert_eq!(other["value"].as_array().unwrap().len(), 3);
    assert_eq!(
        metric(&server, "sluice_feed_cache_hits_total", "cached_numbers"),
        3
    );
    server.stop();
}
