//! One generator per tool. Each returns the text of its file; `super::render` names it.
//! Values are escaped for where they land (XML, M, Python, shell, SQL) by the helpers in
//! `mod.rs`, and URLs are percent-encoded before they are quoted.

use super::{
    FeedSpec, Scope, Target, USER, csv_query, doc_line, m_ident, m_str, py_str, query_string,
    sh_quote, sql_ident, sql_str, unfilled, xml_attr, xml_text,
};

/// The feeds a target covers.
fn feeds<'a>(t: &Target<'a>) -> Vec<&'a FeedSpec> {
    match t.scope {
        Scope::Feed(f) => vec![f],
        Scope::Workspace(all) => all.iter().collect(),
    }
}

/// `demo/sales` or `demo` for titles and comments.
fn what(t: &Target) -> String {
    match t.scope {
        Scope::Feed(f) => format!("{}/{}", t.workspace, f.name),
        Scope::Workspace(_) => t.workspace.to_string(),
    }
}

/// The OData URL of the target: an entity set (with chosen parameters as custom query
/// options) or the workspace's service root.
fn odata_url(t: &Target) -> String {
    let root = t.info.odata_root(t.workspace);
    match t.scope {
        Scope::Feed(f) if t.overrides.is_empty() => format!("{root}{}", f.name),
        Scope::Feed(f) => format!("{root}{}?{}", f.name, query_string(t.overrides)),
        Scope::Workspace(_) => root,
    }
}

/// The CSV URL of one feed: through the link when there is one, else the feed endpoint.
fn csv_url(t: &Target, f: &FeedSpec) -> String {
    let base = match t.link {
        Some(token) => t.info.link_url(token),
        None => t.info.feed_url(t.workspace, &f.name),
    };
    format!("{base}?{}", query_string(&csv_query(f, t.overrides)))
}

/// The path after the public URL, for M's `RelativePath`.
fn relative_path(t: &Target, f: &FeedSpec) -> String {
    match t.link {
        Some(token) => format!("links/{token}"),
        None => format!("feeds/{}/{}", t.workspace, f.name),
    }
}

/// `WHERE "region" = 'EU' AND "tags" IN ('a', 'b')` for chosen parameters, else "".
fn sql_where(overrides: &[(String, String)]) -> String {
    let mut names: Vec<&String> = Vec::new();
    for (k, _) in overrides {
        if !names.contains(&k) {
            names.push(k);
        }
    }
    let terms: Vec<String> = names
        .iter()
        .map(|n| {
            let vals: Vec<String> = overrides
                .iter()
                .filter(|(k, _)| k == *n)
                .map(|(_, v)| sql_str(v))
                .collect();
            match vals.as_slice() {
                [one] => format!("{} = {one}", sql_ident(n)),
                many => format!("{} IN ({})", sql_ident(n), many.join(", ")),
            }
        })
        .collect();
    if terms.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", terms.join(" AND "))
    }
}

/// Defaults as a WHERE clause, to show in a comment where parameters go.
fn default_where(f: &FeedSpec) -> String {
    let q: Vec<(String, String)> = csv_query(f, &[]).into_iter().skip(1).collect();
    sql_where(&q)
}

pub fn pbids(t: &Target) -> String {
    let doc = serde_json::json!({
        "version": "0.1",
        "connections": [{
            "details": {
                "protocol": "odata",
                "address": {"url": odata_url(t)},
            },
            "options": {},
            "mode": "Import",
        }],
    });
    serde_json::to_string_pretty(&doc).expect("JSON always serializes") + "\n"
}

/// The M formula of an Excel query: OData with credentials asked by Excel, or the CSV
/// through a link with none.
fn excel_formula(t: &Target) -> String {
    match (t.scope, t.link) {
        (Scope::Feed(f), Some(_)) => csv_formula(t, f),
        _ => format!(
            "let\n    Source = OData.Feed({}, null, [Implementation = \"2.0\"])\nin\n    Source",
            m_str(&odata_url(t))
        ),
    }
}

pub fn odc(t: &Target) -> String {
    let name = match t.scope {
        Scope::Feed(f) => f.name.clone(),
        Scope::Workspace(_) => t.workspace.to_string(),
    };
    let auth = if t.link.is_some() {
        "Reads the feed through a secret link: no credentials (choose Anonymous if asked)."
    } else {
        "When Excel asks for credentials choose Basic: any user name, a Sluice key as password."
    };
    let description = format!("Sluice {} over OData. {auth}", what(t));
    // The Power Query package Excel imports from the file (MS-ODCFF PowerQueryMashupData):
    // an XML document, carried as escaped text inside the ODC's own XML.
    let formula = excel_formula(t).replace("]]>", "]]]]><![CDATA[>");
    let mashup = format!(
        "<Mashup xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns=\"http://schemas.microsoft.com/DataMashup\">\
         <Client>EXCEL</Client><Version>2.140.405.0</Version><MinVersion>2.21.0.0</MinVersion><Culture>en-US</Culture><SafeCombine>true</SafeCombine>\
         <Items><Query Name=\"{q}\"><Formula><![CDATA[{formula}]]></Formula><IsParameterQuery xsi:nil=\"true\" /><IsDirectQuery xsi:nil=\"true\" /></Query></Items></Mashup>",
        q = xml_attr(&name),
    );
    format!(
        r#"<html xmlns:o="urn:schemas-microsoft-com:office:office" xmlns="http://www.w3.org/TR/REC-html40">
<head>
<meta http-equiv="Content-Type" content="text/x-ms-odc; charset=utf-8" />
<meta name="ProgId" content="ODC.Database" />
<meta name="SourceType" content="OLEDB" />
<title>{title}</title>
<xml id="docprops"><o:DocumentProperties xmlns:o="urn:schemas-microsoft-com:office:office" xmlns="http://www.w3.org/TR/REC-html40">
  <o:Description>{description}</o:Description>
  <o:Name>{title}</o:Name>
 </o:DocumentProperties>
</xml><xml id="msodc"><odc:OfficeDataConnection xmlns:odc="urn:schemas-microsoft-com:office:odc" xmlns="http://www.w3.org/TR/REC-html40">
  <odc:PowerQueryConnection odc:Type="OLEDB">
   <odc:ConnectionString>{conn}</odc:ConnectionString>
   <odc:CommandType>SQL</odc:CommandType>
   <odc:CommandText>{command}</odc:CommandText>
  </odc:PowerQueryConnection>
  <odc:PowerQueryMashupData>{mashup}</odc:PowerQueryMashupData>
 </odc:OfficeDataConnection>
</xml>
</head>
<body></body>
</html>
"#,
        title = xml_text(&format!("Query - {name}")),
        description = xml_text(&description),
        conn = xml_text(&format!(
            "Provider=Microsoft.Mashup.OleDb.1;Data Source=$Workbook$;Location={name};Extended Properties=\"\""
        )),
        command = xml_text(&format!("SELECT * FROM [{name}]")),
        mashup = xml_text(&mashup),
    )
}

pub fn tds(t: &Target) -> String {
    let i = t.info;
    let conn_name = "postgres.sluice";
    let relation = match t.scope {
        Scope::Feed(f) if t.overrides.is_empty() => format!(
            "\n    <relation connection='{c}' name='{n}' table='{table}' type='table' />",
            c = conn_name,
            n = xml_attr(&f.name),
            table = xml_attr(&format!("[public].[{}]", f.name)),
        ),
        Scope::Feed(f) => format!(
            "\n    <relation connection='{c}' name='{n}' type='text'>{sql}</relation>",
            c = conn_name,
            n = xml_attr(&f.name),
            sql = xml_text(&format!(
                "SELECT * FROM {}{}",
                sql_ident(&f.name),
                sql_where(t.overrides)
            )),
        ),
        // The whole database: Tableau opens its data source page to pick feeds (tables).
        Scope::Workspace(_) => String::new(),
    };
    format!(
        "<?xml version='1.0' encoding='utf-8' ?>\n\
         <!-- Sluice {what}: the PostgreSQL endpoint, database = workspace, one table per feed.\n     \
         Tableau asks for the password: a Sluice key. -->\n\
         <datasource formatted-name='{title}' inline='true' version='18.1' xmlns:user='http://www.tableausoftware.com/xml/user'>\n  \
         <connection class='federated'>\n    \
         <named-connections>\n      \
         <named-connection caption='{server}' name='{conn_name}'>\n        \
         <connection authentication='username-password' class='postgres' dbname='{db}' odbc-native-protocol='yes' one-time-sql='' port='{port}' server='{server}' sslmode='require' username='{user}' />\n      \
         </named-connection>\n    \
         </named-connections>{relation}\n  \
         </connection>\n\
         </datasource>\n",
        what = xml_text(&what(t)).replace("--", "- -"),
        title = xml_attr(&format!("Sluice {}", what(t))),
        server = xml_attr(&i.pg_host),
        db = xml_attr(t.workspace),
        port = i.pg_port,
        user = USER,
    )
}

/// A Qlik `[label]` or `[lib://...]`: brackets inside are doubled.
fn qlik_bracket(s: &str) -> String {
    format!("[{}]", s.replace(']', "]]"))
}

pub fn qlik(t: &Target) -> String {
    let i = t.info;
    if let (Scope::Feed(f), Some(_)) = (t.scope, t.link) {
        let conn = format!("Sluice {} {}", t.workspace, f.name);
        return format!(
            "// Sluice feed {what} in Qlik Sense, through a secret feed link (no credentials).\n\
             // Once: Data load editor > Create new connection > Web file\n\
             //   URL:  {url}\n\
             //   Name: {conn}\n\
             // Anyone with the URL can read this feed until the link is revoked (sluice links revoke).\n\
             {label}:\n\
             LOAD * FROM {lib} (txt, utf8, embedded labels, delimiter is ',', msq);\n",
            what = what(t),
            url = csv_url(t, f),
            label = qlik_bracket(&f.name),
            lib = qlik_bracket(&format!("lib://{conn}")),
        );
    }
    let conn = format!("Sluice {}", t.workspace);
    let mut s = format!(
        "// Sluice {what} in Qlik Sense, through its built-in PostgreSQL connector: it sends the key\n\
         // as a password, keeps column types, and takes feed parameters in a WHERE clause, which\n\
         // the REST connector (one URL per load, CSV parsed by hand) would not.\n\
         // Once: Data load editor > Create new connection > PostgreSQL\n\
         //   Host name: {host}   Port: {port}   Database: {db}\n\
         //   User name: {USER}   Password: a Sluice key   SSL mode: require\n\
         //   Name: {conn}\n\
         LIB CONNECT TO {lib};\n",
        what = what(t),
        host = i.pg_host,
        port = i.pg_port,
        db = t.workspace,
        lib = sql_str(&conn),
    );
    for f in feeds(t) {
        s.push('\n');
        if t.overrides.is_empty() && !f.params.is_empty() {
            s.push_str(&format!(
                "// Parameters go in the WHERE clause, e.g.{}\n",
                default_where(f)
            ));
        }
        s.push_str(&format!(
            "{label}:\nLOAD *;\nSQL SELECT * FROM \"public\".{table}{filter};\n",
            label = qlik_bracket(&f.name),
            table = sql_ident(&f.name),
            filter = sql_where(t.overrides),
        ));
    }
    s
}

/// `Csv.Document(Web.Contents(base, [RelativePath, Query]))` with promoted headers: the
/// base URL stays a constant so the Power BI Service can refresh it.
fn csv_formula(t: &Target, f: &FeedSpec) -> String {
    let mut fields: Vec<String> = Vec::new();
    let query = csv_query(f, t.overrides);
    let mut seen: Vec<&str> = Vec::new();
    for (k, _) in &query {
        if seen.contains(&k.as_str()) {
            continue;
        }
        seen.push(k.as_str());
        let vals: Vec<String> = query
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| m_str(v))
            .collect();
        let value = match vals.as_slice() {
            [one] => one.clone(),
            many => format!("{{{}}}", many.join(", ")),
        };
        fields.push(format!("{} = {value}", m_ident(k)));
    }
    format!(
        "let\n    \
         Source = Csv.Document(\n        \
         Web.Contents(\n            \
         {base},\n            \
         [\n                \
         RelativePath = {path},\n                \
         Query = [{fields}]\n            \
         ]\n        \
         ),\n        \
         [Delimiter = \",\", Encoding = 65001, QuoteStyle = QuoteStyle.Csv]\n    \
         ),\n    \
         Rows = Table.PromoteHeaders(Source, [PromoteAllScalars = true])\n\
         in\n    \
         Rows",
        base = m_str(&t.info.public_url),
        path = m_str(&relative_path(t, f)),
        fields = fields.join(", "),
    )
}

pub fn power_query(t: &Target) -> String {
    let auth = if t.link.is_some() {
        "// Credentials: none, choose Anonymous; the secret link in the path is the credential."
    } else {
        "// Credentials: when asked choose Basic: any user name (e.g. sluice), a Sluice key as password."
    };
    let mut s = format!(
        "// Sluice {what} as Power Query M. Power BI: Get data > Blank query > Advanced editor;\n\
         // Excel: Data > Get Data > From Other Sources > Blank Query > Advanced Editor.\n\
         {auth}\n",
        what = what(t),
    );
    match t.scope {
        Scope::Feed(f) => {
            let doc = doc_line(&f.doc);
            if !doc.is_empty() {
                s.push_str(&format!("// {doc}\n"));
            }
            let todo = unfilled(f, t.overrides);
            if !todo.is_empty() {
                s.push_str(&format!(
                    "// Fill in the required parameters: {}\n",
                    todo.join(", ")
                ));
            }
            s.push_str(
                "// The base URL is fixed and the path and query are in RelativePath and Query,\n\
                 // so the Power BI Service can refresh this query.\n",
            );
            s.push_str(&csv_formula(t, f));
        }
        Scope::Workspace(_) => {
            s.push_str(
                "// The workspace's OData service: a navigation table of its feeds. A fixed URL,\n\
                 // so the Power BI Service can refresh it.\n",
            );
            s.push_str(&format!(
                "let\n    Source = OData.Feed({}, null, [Implementation = \"2.0\"])\nin\n    Source",
                m_str(&odata_url(t))
            ));
        }
    }
    s.push('\n');
    s
}

pub fn pandas(t: &Target) -> String {
    let link = t.link.is_some();
    let mut s = format!("# Sluice {} as pandas DataFrames.\n", what(t));
    if link {
        s.push_str(
            "# Reads through a secret feed link: no key needed, and anyone with the URL can read\n\
             # the feed until the link is revoked (sluice links revoke).\n\
             import pandas as pd\n\n",
        );
    } else {
        s.push_str(&format!(
            "# Set SLUICE_KEY to a key that can read workspace {ws}, e.g. from\n\
             # `sluice keys create NAME --role viewer -w {ws}`.\n\
             import os\n\n\
             import pandas as pd\n\n\
             auth = {{\"Authorization\": \"Bearer \" + os.environ[\"SLUICE_KEY\"]}}\n",
            ws = t.workspace,
        ));
    }
    let opts = if link { "" } else { ", storage_options=auth" };
    match t.scope {
        Scope::Feed(f) => {
            let doc = doc_line(&f.doc);
            if !doc.is_empty() {
                s.push_str(&format!("# {doc}\n"));
            }
            let todo = unfilled(f, t.overrides);
            if !todo.is_empty() {
                s.push_str(&format!(
                    "# Fill in the required parameters: {}\n",
                    todo.join(", ")
                ));
            }
            s.push_str(&format!(
                "url = {}\ndf = pd.read_csv(url{opts})\nprint(df.head())\n",
                py_str(&csv_url(t, f))
            ));
        }
        Scope::Workspace(all) => {
            s.push_str("urls = {\n");
            for f in all {
                s.push_str(&format!(
                    "    {}: {},\n",
                    py_str(&f.name),
                    py_str(&csv_url(t, f))
                ));
            }
            s.push_str(&format!(
                "}}\nframes = {{name: pd.read_csv(url{opts}) for name, url in urls.items()}}\n"
            ));
        }
    }
    s
}

pub fn curl(t: &Target) -> String {
    let mut s = format!("# Sluice {} as CSV.\n", what(t));
    let auth = if t.link.is_some() {
        s.push_str(
            "# A secret feed link: no key needed; anyone with the URL can read the feed until the\n\
             # link is revoked (sluice links revoke).\n",
        );
        String::new()
    } else {
        s.push_str(&format!(
            "# Set SLUICE_KEY to a key that can read workspace {}.\n",
            t.workspace
        ));
        format!("-u \"{USER}:$SLUICE_KEY\" ")
    };
    for f in feeds(t) {
        let todo = unfilled(f, t.overrides);
        if !todo.is_empty() {
            s.push_str(&format!(
                "# {}: fill in the required parameters {}\n",
                f.name,
                todo.join(", ")
            ));
        }
        let out = match t.scope {
            Scope::Feed(_) => String::new(),
            Scope::Workspace(_) => format!(" -o {}", sh_quote(&format!("{}.csv", f.name))),
        };
        s.push_str(&format!(
            "curl -sS {auth}{}{out}\n",
            sh_quote(&csv_url(t, f))
        ));
    }
    if let Scope::Workspace(_) = t.scope {
        s.push_str(&format!(
            "# The OData service of the workspace lists the feeds:\ncurl -sS {auth}{}\n",
            sh_quote(&odata_url(t))
        ));
    }
    s
}
