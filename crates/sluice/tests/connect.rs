//! End to end: connection files for BI tools (downloaded through the API and the CLI,
//! parsed, checked for URL, database and auth) and secret feed links (read without any
//! credentials, scoped to one feed, refused at once when revoked). One server, steps in
//! order like a user's session.

mod common;

use common::*;
use serde_json::{Value, json};

fn admin() -> &'static str {
    ADMIN_KEY
}

/// A port nothing listens on now, for the Postgres endpoint the files point at.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn download(http: &Http, path: &str, key: &str) -> (String, String, String) {
    let r = http.get_key(path, key);
    let status = r.status().as_u16();
    let header = |h: &str| {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (ctype, disposition) = (header("content-type"), header("content-disposition"));
    let body = r.text().unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    (ctype, disposition, body)
}

fn xml(body: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(body).unwrap_or_else(|e| panic!("not XML ({e}):\n{body}"))
}

/// The M formula inside an .odc (an XML document escaped inside the ODC's XML).
fn odc_formula(body: &str) -> String {
    let doc = xml(body);
    let mashup = doc
        .descendants()
        .find(|n| n.tag_name().name() == "PowerQueryMashupData")
        .and_then(|n| n.text())
        .expect("mashup data");
    let inner = xml(mashup);
    inner
        .descendants()
        .find(|n| n.tag_name().name() == "Formula")
        .and_then(|n| n.text())
        .expect("formula")
        .to_string()
}

fn postgres_connection(body: &str) -> (String, String, String, String, String) {
    let doc = xml(body);
    let c = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("postgres"))
        .expect("a postgres connection");
    let a = |k: &str| c.attribute(k).unwrap_or_default().to_string();
    (
        a("server"),
        a("port"),
        a("dbname"),
        a("sslmode"),
        a("authentication"),
    )
}

#[test]
fn connection_files_and_secret_feed_links() {
    let pg_port = free_port();
    let s = Server::start(Opts {
        args: vec!["--pg-listen".into(), format!("127.0.0.1:{pg_port}")],
        ..Default::default()
    });
    let http = s.http();
    let (st, viewer) = http.post(
        "/api/v1/keys",
        admin(),
        json!({"name": "bi", "role": "viewer", "workspace": "demo"}),
    );
    assert_eq!(st, 201, "{viewer}");
    let viewer = viewer["secret"].as_str().unwrap().to_string();
    let feed = "/api/v1/workspaces/demo/feeds/sales_by_region";

    // What is on offer, for a viewer.
    let (st, offer) = http.json(&format!("{feed}/connect"), &viewer);
    assert_eq!(st, 200, "{offer}");
    assert_eq!(offer["tools"].as_array().unwrap().len(), 7, "{offer}");
    assert_eq!(offer["postgres"]["port"], pg_port);
    assert_eq!(offer["postgres"]["database"], "demo");
    assert_eq!(
        offer["odata"]["url"],
        format!("{}/odata/demo/sales_by_region", s.url)
    );

    // Every file through the API, parsed, with the right URL, database and auth.
    let (ctype, disp, body) = download(&http, &format!("{feed}/connect/powerbi"), &viewer);
    assert_eq!(ctype, "application/json");
    assert_eq!(disp, "attachment; filename=\"demo-sales_by_region.pbids\"");
    let pbids: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(pbids["connections"][0]["details"]["protocol"], "odata");
    assert_eq!(
        pbids["connections"][0]["details"]["address"]["url"],
        format!("{}/odata/demo/sales_by_region", s.url)
    );
    assert!(!body.contains(&viewer) && !body.contains(admin()));

    let (ctype, disp, body) = download(&http, &format!("{feed}/connect/excel"), &viewer);
    assert!(ctype.starts_with("text/x-ms-odc"), "{ctype}");
    assert!(disp.ends_with("filename=\"demo-sales_by_region.odc\""));
    let formula = odc_formula(&body);
    assert!(
        formula.contains(&format!(
            "OData.Feed(\"{}/odata/demo/sales_by_region\"",
            s.url
        )),
        "{formula}"
    );
    assert!(body.contains("Basic"));

    let (_, disp, body) = download(&http, &format!("{feed}/connect/tableau"), &viewer);
    assert!(disp.ends_with("filename=\"demo-sales_by_region.tds\""));
    assert_eq!(
        postgres_connection(&body),
        (
            "127.0.0.1".to_string(),
            pg_port.to_string(),
            "demo".to_string(),
            "require".to_string(),
            "username-password".to_string()
        )
    );

    let (_, _, qlik) = download(&http, &format!("{feed}/connect/qlik"), &viewer);
    assert!(qlik.contains(&format!(
        "Host name: 127.0.0.1   Port: {pg_port}   Database: demo"
    )));
    assert!(qlik.contains("SQL SELECT * FROM \"public\".\"sales_by_region\";"));

    let (_, _, m) = download(
        &http,
        &format!("{feed}/connect/powerquery?region=US"),
        &viewer,
    );
    assert!(
        m.contains(&format!("Web.Contents(\n            \"{}\",", s.url)),
        "{m}"
    );
    assert!(m.contains("RelativePath = \"feeds/demo/sales_by_region\""));
    assert!(
        m.contains(r#"Query = [format = "csv", region = "US", since = "2024-01-01"]"#),
        "the chosen value replaces the default: {m}"
    );
    let (st, p) = http.json(&format!("{feed}/connect/pandas?since=soon"), &viewer);
    assert_eq!(
        (st, p["code"].as_str(), p["parameter"].as_str()),
        (400, Some("invalid_parameter"), Some("since")),
        "chosen values are checked like a feed call: {p}"
    );
    let (st, p) = http.json(&format!("{feed}/connect/looker"), &viewer);
    assert_eq!(st, 404, "{p}");

    let (_, _, py) = download(&http, &format!("{feed}/connect/pandas"), &viewer);
    assert!(py.contains(&format!(
        "url = \"{}/feeds/demo/sales_by_region?format=csv&region=EU&since=2024-01-01\"",
        s.url
    )));
    assert!(py.contains("os.environ[\"SLUICE_KEY\"]"));

    // The curl snippet works as written, with the key in the environment.
    let (_, _, sh) = download(
        &http,
        "/api/v1/workspaces/demo/feeds/hello/connect/curl",
        &viewer,
    );
    assert!(sh.contains("-u \"sluice:$SLUICE_KEY\""), "{sh}");
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok()
    {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&sh)
            .env("SLUICE_KEY", &viewer)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "greeting,length\r\n\"Hello, world!\",5\r\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("curl is not installed: the curl snippet was checked but not run");
    }

    // The whole workspace.
    let (_, disp, body) = download(&http, "/api/v1/workspaces/demo/connect/powerbi", &viewer);
    assert!(disp.ends_with("filename=\"demo.pbids\""));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["connections"][0]["details"]["address"]["url"],
        format!("{}/odata/demo/", s.url)
    );
    let (_, _, body) = download(&http, "/api/v1/workspaces/demo/connect/tableau", &viewer);
    assert_eq!(postgres_connection(&body).2, "demo");
    let (_, _, py) = download(&http, "/api/v1/workspaces/demo/connect/pandas", &viewer);
    for f in [
        "hello",
        "sales_by_region",
        "customer_segments",
        "monthly_revenue",
    ] {
        assert!(
            py.contains(&format!("\"{f}\": \"{}/feeds/demo/{f}?format=csv", s.url)),
            "{f}: {py}"
        );
    }

    // The same files through the CLI.
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let out = s
        .cli(
            h,
            &viewer,
            &["connect", "sales_by_region", "--tool", "excel"],
        )
        .ok();
    assert!(
        out.stderr.contains("wrote demo-sales_by_region.odc"),
        "{out:?}"
    );
    let odc = std::fs::read_to_string(h.join("demo-sales_by_region.odc")).unwrap();
    assert!(odc_formula(&odc).contains(&format!("{}/odata/demo/sales_by_region", s.url)));
    s.cli(
        h,
        &viewer,
        &["connect", "sales_by_region", "--tool", "tds", "-o", "t.tds"],
    )
    .ok();
    let tds = std::fs::read_to_string(h.join("t.tds")).unwrap();
    assert_eq!(postgres_connection(&tds).2, "demo");
    let out = s
        .cli(
            h,
            &viewer,
            &["connect", "--tool", "powerbi", "--output", "json"],
        )
        .ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["file"], "demo.pbids");
    let pbids: Value =
        serde_json::from_str(&std::fs::read_to_string(h.join("demo.pbids")).unwrap()).unwrap();
    assert_eq!(
        pbids["connections"][0]["details"]["address"]["url"],
        format!("{}/odata/demo/", s.url)
    );
    let out = s
        .cli(
            h,
            &viewer,
            &["connect", "hello", "--tool", "curl", "-p", "name=cli"],
        )
        .ok();
    assert!(
        out.stdout
            .contains("/feeds/demo/hello?format=csv&name=cli'"),
        "snippets go to stdout: {out:?}"
    );
    let out = s.cli(h, &viewer, &["connect", "hello"]).ok();
    assert!(
        out.stdout.contains("powerquery") && out.stdout.contains("Postgres:"),
        "{out:?}"
    );

    // Secret links: editors create them, the token is shown once, reads need no credentials.
    let (st, p) = http.post(
        "/api/v1/workspaces/demo/feeds/hello/links",
        &viewer,
        json!({}),
    );
    assert_eq!((st, p["code"].as_str()), (403, Some("forbidden")), "{p}");
    let (st, link) = http.post(
        "/api/v1/workspaces/demo/feeds/hello/links",
        admin(),
        json!({"name": "sheet"}),
    );
    assert_eq!(st, 201, "{link}");
    let token = link["token"].as_str().unwrap().to_string();
    let url = link["url"].as_str().unwrap().to_string();
    assert_eq!(url, format!("{}/links/{token}", s.url));
    let anon = reqwest::blocking::Client::new();
    let r = anon
        .get(format!("{url}?format=csv&name=link"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().unwrap(),
        "greeting,length\r\n\"Hello, link!\",4\r\n"
    );
    // Same parameter checks and errors as /feeds.
    let r = anon.get(format!("{url}?nmae=x")).send().unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().unwrap()["code"], "unknown_parameter");
    // The token names one feed: it opens hello only, and it is no API key.
    let r = anon
        .get(format!("{url}?feed=sales_by_region"))
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "no way to name another feed through a link"
    );
    let r = anon
        .get(format!(
            "{}/feeds/demo/sales_by_region?api_key={token}",
            s.url
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "a link token is not a key");
    let r = anon
        .get(format!("{}/feeds/demo/hello", s.url))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "a link token is not a key, even for its own feed"
    );
    let (st, listed) = http.json("/api/v1/workspaces/demo/links", admin());
    assert_eq!(st, 200);
    assert_eq!(listed[0]["id"], link["id"]);
    assert!(
        listed[0].get("token").is_none(),
        "the token is never listed"
    );

    // A link is embedded only into its own feed's snippets.
    let (_, _, py) = download(
        &http,
        &format!("/api/v1/workspaces/demo/feeds/hello/connect/pandas?link={token}"),
        &viewer,
    );
    assert!(py.contains(&format!("{url}?format=csv&name=world")) && !py.contains("SLUICE_KEY"));
    let (st, p) = http.json(&format!("{feed}/connect/pandas?link={token}"), &viewer);
    assert_eq!((st, p["parameter"].as_str()), (400, Some("link")), "{p}");

    // Revoked: 401 at once, saying so, without a password prompt.
    let r = http
        .client
        .delete(format!(
            "{}/api/v1/workspaces/demo/feeds/hello/links/{}",
            s.url,
            link["id"].as_str().unwrap()
        ))
        .bearer_auth(admin())
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = anon.get(format!("{url}?format=csv")).send().unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_none());
    let p: Value = r.json().unwrap();
    assert_eq!(p["code"], "invalid_key");
    assert!(p["detail"].as_str().unwrap().contains("revoked"), "{p}");

    // The CLI: create, embed, list, revoke.
    let out = s
        .cli(h, admin(), &["links", "create", "hello", "--name", "cli"])
        .ok();
    let cli_url = out.stdout.trim().to_string();
    assert!(
        cli_url.starts_with(&format!("{}/links/fl_", s.url)),
        "{out:?}"
    );
    assert_eq!(
        anon.get(format!("{cli_url}?format=csv"))
            .send()
            .unwrap()
            .status(),
        200
    );
    let out = s
        .cli(
            h,
            admin(),
            &["connect", "hello", "--tool", "qlik", "--link"],
        )
        .ok();
    assert!(
        out.stdout.contains("/links/fl_") && out.stdout.contains("Web file"),
        "{out:?}"
    );
    assert!(out.stderr.contains("secret link"), "{out:?}");
    let out = s
        .cli(h, admin(), &["links", "ls", "hello", "--output", "json"])
        .ok();
    let listed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    for l in listed.as_array().unwrap() {
        s.cli(h, admin(), &["links", "revoke", l["id"].as_str().unwrap()])
            .ok();
    }
    assert_eq!(
        anon.get(format!("{cli_url}?format=csv"))
            .send()
            .unwrap()
            .status(),
        401
    );
    let out = s.cli(h, admin(), &["links", "ls"]).ok();
    assert!(out.stderr.contains("no active links"), "{out:?}");
}
