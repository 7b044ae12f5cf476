//! Every generated file is parsed with a real parser (roxmltree for XML, serde_json for
//! JSON) and checked for the URL, database and auth method a tool will use.

use super::*;
use serde_json::{Value, json};

fn info() -> ConnectInfo {
    ConnectInfo::new(
        "https://data.example.com/bi/",
        "0.0.0.0:6543".parse().unwrap(),
    )
}

fn param(v: Value) -> ParamSpec {
    serde_json::from_value(v).unwrap()
}

fn sales() -> FeedSpec {
    FeedSpec {
        name: "sales".into(),
        doc: "Daily sales -->\nfor one region.".into(),
        params: vec![
            param(json!({"name": "region", "type": "str", "default": "EU"})),
            param(json!({"name": "since", "type": "date", "default": "2024-01-01"})),
            param(json!({"name": "limit", "type": "int", "default": 10})),
            param(json!({"name": "tags", "type": "list[str]", "default": ["a b", "c"]})),
            param(json!({"name": "type", "type": "str", "default": "x & \"<y>\" #(lf)"})),
            param(json!({"name": "note", "type": "str", "default": null})),
            param(json!({"name": "owner", "type": "str", "required": true})),
        ],
    }
}

fn stock() -> FeedSpec {
    FeedSpec {
        name: "stock".into(),
        doc: String::new(),
        params: vec![],
    }
}

fn target<'a>(info: &'a ConnectInfo, scope: Scope<'a>) -> Target<'a> {
    Target {
        info,
        workspace: "demo",
        scope,
        overrides: &[],
        link: None,
    }
}

const TOKEN: &str = "fl_abcdefghij_0123456789abcdefghij0123456789ab";

fn xml(body: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(body).unwrap_or_else(|e| panic!("not XML ({e}):\n{body}"))
}

fn element<'a, 'i>(doc: &'a roxmltree::Document<'i>, name: &str) -> roxmltree::Node<'a, 'i> {
    doc.descendants()
        .find(|n| n.tag_name().name() == name)
        .unwrap_or_else(|| panic!("no <{name}>"))
}

/// The M formula inside an ODC: the mashup XML is escaped text in the ODC's XML.
fn odc_formula(body: &str) -> (String, String) {
    let doc = xml(body);
    let conn = element(&doc, "ConnectionString")
        .text()
        .unwrap()
        .to_string();
    let mashup = element(&doc, "PowerQueryMashupData").text().unwrap();
    let inner = xml(mashup);
    let formula = element(&inner, "Formula").text().unwrap().to_string();
    let description = element(&doc, "Description").text().unwrap().to_string();
    (conn + "\n" + &description, formula)
}

#[test]
fn connect_info_uses_the_public_host_for_a_wildcard_pg_address() {
    let i = info();
    assert_eq!(i.public_url, "https://data.example.com/bi");
    assert_eq!((i.pg_host.as_str(), i.pg_port), ("data.example.com", 6543));
    let i = ConnectInfo::new("http://127.0.0.1:8080", "10.0.0.5:5433".parse().unwrap());
    assert_eq!(i.pg_host, "10.0.0.5");
    let i = ConnectInfo::new("http://u@[::1]:8080/x", "[::]:5433".parse().unwrap());
    assert_eq!(i.pg_host, "::1");
    assert_eq!(url_host("https://h.example:1/a?b"), Some("h.example"));
    assert_eq!(url_host("nonsense"), None);
}

#[test]
fn tools_parse_by_name_and_by_extension() {
    for t in Tool::ALL {
        assert_eq!(Tool::parse(t.name()), Some(t));
        assert_eq!(Tool::parse(t.extension()), Some(t), "{t:?}");
    }
    assert_eq!(Tool::parse("PBIDS"), Some(Tool::PowerBi));
    assert_eq!(Tool::parse("m"), Some(Tool::PowerQuery));
    assert_eq!(Tool::parse("looker"), None);
}

#[test]
fn pbids_is_json_pointing_at_the_odata_entity_set_without_credentials() {
    let i = info();
    let f = sales();
    let file = render(Tool::PowerBi, &target(&i, Scope::Feed(&f))).unwrap();
    assert_eq!(file.filename, "demo-sales.pbids");
    assert_eq!(file.media_type, "application/json");
    let v: Value = serde_json::from_str(&file.body).unwrap();
    assert_eq!(v["version"], "0.1");
    let c = &v["connections"][0];
    assert_eq!(c["details"]["protocol"], "odata");
    assert_eq!(
        c["details"]["address"]["url"],
        "https://data.example.com/bi/odata/demo/sales"
    );
    assert_eq!(c["mode"], "Import");
    assert!(!file.body.contains("sk_") && !file.body.contains("password"));

    // The workspace: the service root, where Power BI's navigator lists every feed.
    let all = [sales(), stock()];
    let file = render(Tool::PowerBi, &target(&i, Scope::Workspace(&all))).unwrap();
    assert_eq!(file.filename, "demo.pbids");
    let v: Value = serde_json::from_str(&file.body).unwrap();
    assert_eq!(
        v["connections"][0]["details"]["address"]["url"],
        "https://data.example.com/bi/odata/demo/"
    );
}

#[test]
fn odc_is_xml_with_an_odata_query_and_basic_auth() {
    let i = info();
    let f = sales();
    let file = render(Tool::Excel, &target(&i, Scope::Feed(&f))).unwrap();
    assert_eq!(file.filename, "demo-sales.odc");
    assert!(file.media_type.starts_with("text/x-ms-odc"));
    let (meta, formula) = odc_formula(&file.body);
    assert!(
        meta.contains("Provider=Microsoft.Mashup.OleDb.1;Data Source=$Workbook$;Location=sales"),
        "{meta}"
    );
    assert!(meta.contains("Basic"), "{meta}");
    assert!(
        formula.contains(r#"OData.Feed("https://data.example.com/bi/odata/demo/sales", null"#),
        "{formula}"
    );
    assert!(!file.body.contains("sk_"));

    // Chosen parameters travel as custom query options, & and all, through two escapings.
    let over = [
        ("region".to_string(), "US & <CA>".to_string()),
        ("limit".to_string(), "5".to_string()),
    ];
    let t = Target {
        overrides: &over,
        ..target(&i, Scope::Feed(&f))
    };
    let (_, formula) = odc_formula(&render(Tool::Excel, &t).unwrap().body);
    assert!(
        formula.contains("/odata/demo/sales?region=US%20%26%20%3CCA%3E&limit=5\""),
        "{formula}"
    );

    let all = [sales(), stock()];
    let (_, formula) = odc_formula(
        &render(Tool::Excel, &target(&i, Scope::Workspace(&all)))
            .unwrap()
            .body,
    );
    assert!(
        formula.contains(r#"OData.Feed("https://data.example.com/bi/odata/demo/", null"#),
        "{formula}"
    );
}

#[test]
fn odc_with_a_link_reads_csv_anonymously() {
    let i = info();
    let f = sales();
    let t = Target {
        link: Some(TOKEN),
        ..target(&i, Scope::Feed(&f))
    };
    let (meta, formula) = odc_formula(&render(Tool::Excel, &t).unwrap().body);
    assert!(meta.contains("Anonymous"), "{meta}");
    assert!(
        formula.contains(&format!(r#"RelativePath = "links/{TOKEN}""#)),
        "{formula}"
    );
    assert!(formula.contains("Csv.Document(") && !formula.contains("OData"));
}

#[test]
fn tds_is_xml_with_a_postgres_connection_to_the_workspace_database() {
    let i = info();
    let f = sales();
    let file = render(Tool::Tableau, &target(&i, Scope::Feed(&f))).unwrap();
    assert_eq!(file.filename, "demo-sales.tds");
    let doc = xml(&file.body);
    let pg = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("postgres"))
        .expect("a postgres connection");
    assert_eq!(pg.attribute("server"), Some("data.example.com"));
    assert_eq!(pg.attribute("port"), Some("6543"));
    assert_eq!(pg.attribute("dbname"), Some("demo"));
    assert_eq!(pg.attribute("username"), Some(USER));
    assert_eq!(pg.attribute("sslmode"), Some("require"));
    assert_eq!(pg.attribute("authentication"), Some("username-password"));
    assert_eq!(pg.attribute("password"), None);
    let rel = element(&doc, "relation");
    assert_eq!(rel.attribute("type"), Some("table"));
    assert_eq!(rel.attribute("table"), Some("[public].[sales]"));
    assert_eq!(
        rel.attribute("connection"),
        pg.parent().unwrap().attribute("name")
    );

    // Chosen parameters make a custom SQL relation.
    let over = [
        ("region".to_string(), "O'Brien".to_string()),
        ("tags".to_string(), "a".to_string()),
        ("tags".to_string(), "b".to_string()),
    ];
    let t = Target {
        overrides: &over,
        ..target(&i, Scope::Feed(&f))
    };
    let body = render(Tool::Tableau, &t).unwrap().body;
    let doc = xml(&body);
    let rel = element(&doc, "relation");
    assert_eq!(rel.attribute("type"), Some("text"));
    assert_eq!(
        rel.text(),
        Some(r#"SELECT * FROM "sales" WHERE "region" = 'O''Brien' AND "tags" IN ('a', 'b')"#)
    );

    // The whole workspace: the database without a table.
    let all = [sales(), stock()];
    let body = render(Tool::Tableau, &target(&i, Scope::Workspace(&all)))
        .unwrap()
        .body;
    let doc = xml(&body);
    assert!(doc.descendants().all(|n| n.tag_name().name() != "relation"));
    assert!(
        doc.descendants()
            .any(|n| n.attribute("dbname") == Some("demo"))
    );
}

#[test]
fn qlik_connects_to_postgres_and_selects_each_feed() {
    let i = info();
    let f = sales();
    let file = render(Tool::Qlik, &target(&i, Scope::Feed(&f))).unwrap();
    assert_eq!(file.filename, "demo-sales.qvs");
    let s = &file.body;
    assert!(s.contains("LIB CONNECT TO 'Sluice demo';"), "{s}");
    assert!(s.contains("Host name: data.example.com   Port: 6543   Database: demo"));
    assert!(s.contains("User name: sluice   Password: a Sluice key   SSL mode: require"));
    assert!(
        s.contains("[sales]:\nLOAD *;\nSQL SELECT * FROM \"public\".\"sales\";"),
        "{s}"
    );
    assert!(
        s.contains(r#"e.g. WHERE "region" = 'EU' AND "since" = '2024-01-01'"#),
        "{s}"
    );
    assert!(s.lines().all(|l| l.is_empty()
        || l.starts_with("//")
        || l.starts_with("LIB")
        || l.starts_with('[')
        || l.starts_with("LOAD")
        || l.starts_with("SQL")));

    let all = [sales(), stock()];
    let s = render(Tool::Qlik, &target(&i, Scope::Workspace(&all)))
        .unwrap()
        .body;
    assert!(s.contains("[stock]:\nLOAD *;\nSQL SELECT * FROM \"public\".\"stock\";"));
    assert_eq!(s.matches("LIB CONNECT").count(), 1);

    let t = Target {
        link: Some(TOKEN),
        ..target(&i, Scope::Feed(&f))
    };
    let s = render(Tool::Qlik, &t).unwrap().body;
    assert!(s.contains(&format!(
        "URL:  https://data.example.com/bi/links/{TOKEN}?format=csv&region=EU"
    )));
    assert!(s.contains("LOAD * FROM [lib://Sluice demo sales] (txt, utf8, embedded labels"));
}

#[test]
fn power_query_is_refreshable_web_contents_with_every_parameter() {
    let i = info();
    let f = sales();
    let file = render(Tool::PowerQuery, &target(&i, Scope::Feed(&f))).unwrap();
    assert_eq!(file.filename, "demo-sales.pq");
    let s = &file.body;
    assert!(
        s.contains(
            r#"Web.Contents(
            "https://data.example.com/bi","#
        ),
        "{s}"
    );
    assert!(s.contains(r#"RelativePath = "feeds/demo/sales","#), "{s}");
    assert!(
        s.contains(
            r##"Query = [format = "csv", region = "EU", since = "2024-01-01", limit = "10", tags = {"a b", "c"}, #"type" = "x & ""<y>"" #(#)(lf)", owner = "<owner>"]"##
        ),
        "{s}"
    );
    assert!(s.contains("Table.PromoteHeaders(Source, [PromoteAllScalars = true])"));
    assert!(s.contains("choose Basic"));
    assert!(s.contains("Fill in the required parameters: owner"));
    assert!(
        s.contains("// Daily sales -- >"),
        "comments cannot be closed: {s}"
    );
    assert!(!s.contains("sk_"));

    let t = Target {
        link: Some(TOKEN),
        ..target(&i, Scope::Feed(&f))
    };
    let s = render(Tool::PowerQuery, &t).unwrap().body;
    assert!(s.contains(&format!(r#"RelativePath = "links/{TOKEN}","#)));
    assert!(s.contains("Anonymous"));

    let all = [sales(), stock()];
    let s = render(Tool::PowerQuery, &target(&i, Scope::Workspace(&all)))
        .unwrap()
        .body;
    assert!(s.contains(r#"OData.Feed("https://data.example.com/bi/odata/demo/", null"#));
}

#[test]
fn pandas_and_curl_read_csv_with_the_key_from_the_environment() {
    let i = info();
    let f = sales();
    let over = [("owner".to_string(), "me".to_string())];
    let t = Target {
        overrides: &over,
        ..target(&i, Scope::Feed(&f))
    };
    let url = "https://data.example.com/bi/feeds/demo/sales?format=csv&region=EU&since=2024-01-01&limit=10&tags=a%20b&tags=c&type=x%20%26%20%22%3Cy%3E%22%20%23%28lf%29&owner=me";
    let py = render(Tool::Pandas, &t).unwrap();
    assert_eq!(py.filename, "demo-sales.py");
    assert!(py.body.contains(&format!("url = \"{url}\"")), "{}", py.body);
    assert!(
        py.body
            .contains(r#"auth = {"Authorization": "Bearer " + os.environ["SLUICE_KEY"]}"#)
    );
    assert!(
        py.body
            .contains("df = pd.read_csv(url, storage_options=auth)")
    );
    assert!(!py.body.contains("Fill in"));

    let sh = render(Tool::Curl, &t).unwrap();
    assert_eq!(sh.filename, "demo-sales.sh");
    assert!(
        sh.body
            .contains(&format!("curl -sS -u \"sluice:$SLUICE_KEY\" '{url}'\n")),
        "{}",
        sh.body
    );

    // With a link: no key anywhere.
    let t = Target {
        link: Some(TOKEN),
        ..target(&i, Scope::Feed(&f))
    };
    let py = render(Tool::Pandas, &t).unwrap().body;
    assert!(py.contains(&format!(
        "url = \"https://data.example.com/bi/links/{TOKEN}?format=csv&region=EU"
    )));
    assert!(py.contains("df = pd.read_csv(url)\n") && !py.contains("SLUICE_KEY"));
    let sh = render(Tool::Curl, &t).unwrap().body;
    assert!(sh.contains(&format!(
        "curl -sS 'https://data.example.com/bi/links/{TOKEN}?format=csv"
    )));
    assert!(!sh.contains("SLUICE_KEY"));

    // The workspace: every feed.
    let all = [sales(), stock()];
    let py = render(Tool::Pandas, &target(&i, Scope::Workspace(&all)))
        .unwrap()
        .body;
    assert!(
        py.contains(
            "    \"stock\": \"https://data.example.com/bi/feeds/demo/stock?format=csv\",\n"
        )
    );
    assert!(py.contains("frames = {name: pd.read_csv(url, storage_options=auth)"));
    let sh = render(Tool::Curl, &target(&i, Scope::Workspace(&all)))
        .unwrap()
        .body;
    assert!(
        sh.contains("/feeds/demo/stock?format=csv' -o 'stock.csv'\n"),
        "{sh}"
    );
    assert!(sh.contains("'https://data.example.com/bi/odata/demo/'"));
}

#[test]
fn links_and_parameters_are_refused_where_they_cannot_apply() {
    let i = info();
    let f = sales();
    for tool in [Tool::PowerBi, Tool::Tableau] {
        let t = Target {
            link: Some(TOKEN),
            ..target(&i, Scope::Feed(&f))
        };
        assert_eq!(render(tool, &t).unwrap_err().code, Code::BadRequest);
    }
    let all = [sales()];
    let t = Target {
        link: Some(TOKEN),
        ..target(&i, Scope::Workspace(&all))
    };
    assert_eq!(render(Tool::Curl, &t).unwrap_err().code, Code::BadRequest);
    let over = [("region".to_string(), "US".to_string())];
    let t = Target {
        overrides: &over,
        ..target(&i, Scope::Workspace(&all))
    };
    assert_eq!(render(Tool::Curl, &t).unwrap_err().code, Code::BadRequest);
}

#[test]
fn escaping_helpers() {
    assert_eq!(xml_attr(r#"a&b<c>"d'"#), "a&amp;b&lt;c&gt;&quot;d&apos;");
    assert_eq!(
        m_str("say \"hi\"\n#(tab)"),
        r##""say ""hi""#(lf)#(#)(tab)""##
    );
    assert_eq!(m_ident("region"), "region");
    assert_eq!(m_ident("each"), "#\"each\"");
    assert_eq!(m_ident("1x"), "#\"1x\"");
    assert_eq!(sh_quote("it's"), r#"'it'\''s'"#);
    assert_eq!(sql_str("O'Brien"), "'O''Brien'");
    assert_eq!(sql_ident("a\"b"), "\"a\"\"b\"");
    assert_eq!(py_str("a\"b\\"), r#""a\"b\\""#);
    assert_eq!(pct("a b&c/é"), "a%20b%26c%2F%C3%A9");
    assert_eq!(doc_line("\n  First */ line\nsecond"), "First * / line");
}
