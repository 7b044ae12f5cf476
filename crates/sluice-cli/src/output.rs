//! Everything the client prints for people: aligned tables, CSV, JSON cells as text,
//! dimmed labels. Pure functions return strings so they can be tested; `print_out`
//! is the only writer to stdout and treats a closed pipe (`| head`) as a normal end.

use anyhow::Result;
use serde_json::Value;
use std::io::{IsTerminal, Write};

/// Longest cell shown in a table; longer values are cut with `…` (use --output json for all).
const MAX_CELL: usize = 48;

/// Terminal styling decided once at the top: ANSI codes only when stderr is a terminal.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub fn detect() -> Style {
        Style {
            color: std::io::stderr().is_terminal(),
        }
    }
    pub fn dim(&self, s: &str) -> String {
        if self.color {
            format!("\x1b[2m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub fn yellow(&self, s: &str) -> String {
        if self.color {
            format!("\x1b[33m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

/// Writes to stdout; a reader that went away (broken pipe) is not an error for a CLI.
pub fn print_out(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// Pretty JSON plus a newline, for `--output json`.
pub fn print_json(v: &Value) -> Result<()> {
    print_out(&format!("{}\n", serde_json::to_string_pretty(v)?))
}

/// A JSON value as a table cell: strings bare, null as `null`, nested values as JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// A string made safe for one table line: control characters escaped, long text cut.
fn clip(s: &str) -> String {
    let one_line: String = s
        .chars()
        .flat_map(|c| match c {
            '\n' => vec!['\\', 'n'],
            '\t' => vec![' '],
            c if c.is_control() => vec!['?'],
            c => vec![c],
        })
        .collect();
    if one_line.chars().count() > MAX_CELL {
        let cut: String = one_line.chars().take(MAX_CELL - 1).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.parse::<f64>().is_ok()
}

/// An aligned text table: a header, a rule, the rows. Columns whose values are all
/// numbers are right-aligned so digits line up, as in a spreadsheet.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            (0..headers.len())
                .map(|i| r.get(i).map(|c| clip(c)).unwrap_or_default())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([h.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let numeric: Vec<bool> = (0..headers.len())
        .map(|i| {
            let mut vals = rows
                .iter()
                .map(|r| r[i].as_str())
                .filter(|c| !c.is_empty() && *c != "null")
                .peekable();
            vals.peek().is_some() && vals.all(is_numeric)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i].saturating_sub(c.chars().count());
                if numeric[i] {
                    format!("{}{c}", " ".repeat(pad))
                } else {
                    format!("{c}{}", " ".repeat(pad))
                }
            })
            .collect();
        format!("{}\n", parts.join("  ").trim_end())
    };
    let mut out = line(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out.push_str(&line(
        &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
    ));
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

/// RFC 4180 CSV with a header line.
pub fn csv(headers: &[String], rows: &[Vec<Value>]) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }
    let mut out = headers
        .iter()
        .map(|h| field(h))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .map(|v| match v {
                Value::Null => String::new(),
                v => field(&cell(v)),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// Rows as an array of objects keyed by column name, the shape `GET /feeds/...` returns.
pub fn records(columns: &[String], rows: &[Vec<Value>]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| Value::Object(columns.iter().cloned().zip(r.iter().cloned()).collect()))
            .collect(),
    )
}

/// A field of a JSON object as text, or "" when absent.
pub fn field(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(x) => cell(x),
    }
}

/// `1536` → `1.5 KiB`, for download progress.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_aligns_text_left_and_numbers_right() {
        let t = table(
            &["product", "revenue"],
            &[
                vec!["Widget".into(), "1200.5".into()],
                vec!["Gizmo deluxe".into(), "99".into()],
            ],
        );
        assert_eq!(
            t,
            "product       revenue\n\
             ------------  -------\n\
             Widget         1200.5\n\
             Gizmo deluxe       99\n"
        );
    }

    #[test]
    fn table_escapes_newlines_cuts_long_cells_and_pads_short_rows() {
        let long = "x".repeat(100);
        let t = table(
            &["a", "b"],
            &[vec!["line1\nline2".into()], vec![long.clone(), "1".into()]],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[2], "line1\\nline2");
        assert!(
            lines[3].starts_with(&format!("{}…", "x".repeat(MAX_CELL - 1))),
            "{}",
            lines[3]
        );
        assert!(lines[3].ends_with("  1"));
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn cells_and_csv() {
        assert_eq!(cell(&json!("EU")), "EU");
        assert_eq!(cell(&json!(null)), "null");
        assert_eq!(cell(&json!(3.5)), "3.5");
        assert_eq!(cell(&json!(["a", "b"])), r#"["a","b"]"#);
        let c = csv(
            &["name".into(), "n".into()],
            &[
                vec![json!("a,b"), json!(1)],
                vec![json!("say \"hi\""), json!(null)],
            ],
        );
        assert_eq!(c, "name,n\n\"a,b\",1\n\"say \"\"hi\"\"\",\n");
    }

    #[test]
    fn records_and_bytes() {
        let r = records(&["a".into(), "b".into()], &[vec![json!(1), json!("x")]]);
        assert_eq!(r, json!([{"a": 1, "b": "x"}]));
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn style_only_colors_when_asked() {
        assert_eq!(Style { color: false }.dim("x"), "x");
        assert_eq!(Style { color: true }.dim("x"), "\x1b[2mx\x1b[0m");
    }
}
