//! The `COPY` statement, read as PostgreSQL reads it: the source (a parenthesised query,
//! or a table with an optional column list), the direction and target, and the options,
//! in the `WITH (name value, ...)` form or the older `CSV HEADER` keywords. Pure: the
//! statement text in, a [`Copy`] or the [`Refusal`] PostgreSQL would answer out.
//!
//! The query inside `COPY (...)` is kept as the client wrote it: it goes the way of a
//! plain `SELECT` (see `mod.rs`), so a feed's parameters in its `WHERE` mean the same.

use datafusion::sql::sqlparser::ast::{Ident, ObjectName};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{IsOptional, Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// An error PostgreSQL would answer the statement with: SQLSTATE, message, hint.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
    pub hint: Option<&'static str>,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        hint: None,
    }
}

const SYNTAX: &str = "42601";
const INVALID_PARAMETER: &str = "22023";
const NOT_SUPPORTED: &str = "0A000";

/// What rows a `COPY ... TO STDOUT` sends, and how.
#[derive(Debug, PartialEq, Eq)]
pub struct Copy {
    pub source: Source,
    pub options: Options,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    /// The text of the query between the parentheses, as the client sent it.
    Query(String),
    /// A table (a feed) and the columns to send, all when empty.
    Table {
        name: ObjectName,
        columns: Vec<Ident>,
    },
}

impl Source {
    /// The `SELECT` whose rows are copied.
    pub fn select(&self) -> String {
        match self {
            Source::Query(q) => q.clone(),
            Source::Table { name, columns } if columns.is_empty() => {
                format!("SELECT * FROM {name}")
            }
            Source::Table { name, columns } => {
                let list: Vec<String> = columns.iter().map(Ident::to_string).collect();
                format!("SELECT {} FROM {name}", list.join(", "))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Csv,
    Binary,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ForceQuote {
    None,
    All,
    Columns(Vec<Ident>),
}

/// The options of a `COPY ... TO`, checked and with PostgreSQL's defaults filled in.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    pub format: Format,
    pub delimiter: u8,
    /// How NULL is written: `\N` in text, nothing in CSV.
    pub null: Vec<u8>,
    pub header: bool,
    /// CSV only.
    pub quote: u8,
    pub escape: u8,
    pub force_quote: ForceQuote,
}

/// Whether `sql` is a `COPY` statement (its first word, after blanks and comments).
/// Only these are parsed here; everything else goes its usual way untouched.
pub fn is_copy(sql: &str) -> bool {
    sluice_core::sqlparams::first_word(sql).eq_ignore_ascii_case("copy")
}

/// A `COPY` statement (`is_copy(sql)` holds): what to send, or why not.
pub fn parse(sql: &str) -> Result<Copy, Refusal> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| refuse(SYNTAX, format!("syntax error in COPY: {e}")))?;
    let tokens: Vec<TokenWithSpan> = tokens
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let syntax = |e: ParserError| refuse(SYNTAX, format!("syntax error in COPY: {}", message(e)));
    let mut p = Parser::new(&dialect).with_tokens_with_locations(tokens.clone());
    p.next_token(); // COPY
    let source = if p.consume_token(&Token::LParen) {
        // The query's own text, from just after `(` to its matching `)`.
        let (open, close) = parenthesised(&tokens).ok_or_else(|| {
            refuse(
                SYNTAX,
                "syntax error in COPY: the query in COPY (...) has no closing parenthesis",
            )
        })?;
        p.parse_query().map_err(syntax)?;
        p.expect_token(&Token::RParen).map_err(syntax)?;
        let (start, end) = (
            offset(sql, &tokens[open], true),
            offset(sql, &tokens[close], false),
        );
        match (start, end) {
            (Some(s), Some(e)) if s <= e => Source::Query(sql[s..e].trim().to_string()),
            _ => {
                return Err(refuse(
                    SYNTAX,
                    "syntax error in COPY: the query is not readable",
                ));
            }
        }
    } else {
        let name = p.parse_object_name(false).map_err(syntax)?;
        let columns = p
            .parse_parenthesized_column_list(IsOptional::Optional, false)
            .map_err(syntax)?;
        Source::Table { name, columns }
    };
    let to = match word(&p).as_deref() {
        Some("TO") => true,
        Some("FROM") => false,
        _ => return Err(syntax(expected(&p, "TO or FROM"))),
    };
    p.next_token();
    let target = match word(&p).as_deref() {
        Some("STDOUT") | Some("STDIN") => {
            p.next_token();
            None
        }
        Some("PROGRAM") => Some("a program"),
        _ => Some("a file"),
    };
    if !to {
        return Err(Refusal {
            code: "25006",
            message: "cannot execute COPY FROM: feeds are read-only, this PostgreSQL endpoint only sends rows (COPY ... TO STDOUT)".into(),
            hint: Some(
                "to publish data, write a feed that returns it and deploy it (sluice deploy FILE)",
            ),
        });
    }
    if let Some(what) = target {
        return Err(Refusal {
            code: "42501",
            message: format!(
                "COPY to {what} is not allowed: it would run on the Sluice server; only COPY ... TO STDOUT is"
            ),
            hint: Some(
                "COPY (SELECT ...) TO STDOUT sends the rows to the client; psql's \\copy ... to 'file' writes them to a file on your side",
            ),
        });
    }
    let raw = options(&mut p).map_err(syntax)?;
    while p.consume_token(&Token::SemiColon) {}
    if p.peek_token().token != Token::EOF {
        let found = p.peek_token().token;
        return Err(refuse(
            SYNTAX,
            format!(
                "syntax error at or near \"{found}\": COPY must be the only statement of its query"
            ),
        ));
    }
    Ok(Copy {
        source,
        options: check(raw)?,
    })
}

fn message(e: ParserError) -> String {
    match e {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m,
        other => other.to_string(),
    }
}

fn expected(p: &Parser, what: &str) -> ParserError {
    ParserError::ParserError(format!("expected {what}, found {}", p.peek_token().token))
}

/// The next token, upper-cased, when it is an unquoted word.
fn word(p: &Parser) -> Option<String> {
    match p.peek_token().token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

/// Indexes of the `(` after COPY and of its matching `)`.
fn parenthesised(tokens: &[TokenWithSpan]) -> Option<(usize, usize)> {
    let open = 1;
    if tokens.get(open)?.token != Token::LParen {
        return None;
    }
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some((open, i));
                }
            }
            _ => {}
        }
    }
    None
}

/// Byte offset in `sql` of a one-character token: just after it, or at it.
fn offset(sql: &str, t: &TokenWithSpan, after: bool) -> Option<usize> {
    let loc = t.span.start;
    let line_start = if loc.line <= 1 {
        0
    } else {
        sql.match_indices('\n').nth(loc.line as usize - 2)?.0 + 1
    };
    let rest = &sql[line_start..];
    let col = (loc.column as usize).checked_sub(1)?;
    let at = line_start + rest.char_indices().nth(col).map(|(i, _)| i)?;
    Some(if after { at + 1 } else { at })
}

/// An option's value as written.
#[derive(Debug, PartialEq, Eq)]
enum Arg {
    None,
    /// A keyword or name, lower-cased unless quoted.
    Word(String),
    Str(String),
    Number(String),
    Star,
    Columns(Vec<Ident>),
}

/// `[WITH] (name [value], ...)`, or the older `[WITH] BINARY | CSV | HEADER | DELIMITER
/// [AS] 'x' | NULL [AS] 'x' | QUOTE [AS] 'x' | ESCAPE [AS] 'x' | FORCE QUOTE cols | ...`.
fn options(p: &mut Parser) -> Result<Vec<(String, Arg)>, ParserError> {
    if word(p).as_deref() == Some("WITH") {
        p.next_token();
    }
    let mut out = Vec::new();
    if p.consume_token(&Token::LParen) {
        loop {
            let name = match p.next_token().token {
                Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_lowercase(),
                Token::Word(w) => w.value,
                other => {
                    return Err(ParserError::ParserError(format!(
                        "expected an option name, found {other}"
                    )));
                }
            };
            let arg = match p.peek_token().token {
                Token::Comma | Token::RParen => Arg::None,
                Token::Mul => {
                    p.next_token();
                    Arg::Star
                }
                Token::LParen => {
                    Arg::Columns(p.parse_parenthesized_column_list(IsOptional::Mandatory, false)?)
                }
                _ => arg(p)?,
            };
            out.push((name, arg));
            if !p.consume_token(&Token::Comma) {
                p.expect_token(&Token::RParen)?;
                break;
            }
        }
        return Ok(out);
    }
    let string = |p: &mut Parser| -> Result<Arg, ParserError> {
        if word(p).as_deref() == Some("AS") {
            p.next_token();
        }
        Ok(Arg::Str(p.parse_literal_string()?))
    };
    while let Some(w) = word(p) {
        p.next_token();
        let option = match w.as_str() {
            "BINARY" => ("format".into(), Arg::Word("binary".into())),
            "CSV" => ("format".into(), Arg::Word("csv".into())),
            "HEADER" => ("header".into(), Arg::None),
            "FREEZE" => ("freeze".into(), Arg::None),
            "DELIMITER" | "NULL" | "QUOTE" | "ESCAPE" | "ENCODING" => {
                (w.to_ascii_lowercase(), string(p)?)
            }
            "FORCE" => {
                let what = word(p);
                p.next_token();
                let name = match what.as_deref() {
                    Some("QUOTE") => "force_quote",
                    Some("NULL") => "force_null",
                    Some("NOT") if word(p).as_deref() == Some("NULL") => {
                        p.next_token();
                        "force_not_null"
                    }
                    _ => {
                        return Err(ParserError::ParserError(
                            "expected QUOTE, NOT NULL or NULL after FORCE".into(),
                        ));
                    }
                };
                let arg = if p.consume_token(&Token::Mul) {
                    Arg::Star
                } else {
                    Arg::Columns(p.parse_comma_separated(|p| p.parse_identifier())?)
                };
                (name.into(), arg)
            }
            other => {
                return Err(ParserError::ParserError(format!(
                    "unknown COPY option {other}"
                )));
            }
        };
        out.push(option);
    }
    Ok(out)
}

/// A plain option value: a string, a number or a word.
fn arg(p: &mut Parser) -> Result<Arg, ParserError> {
    let t = p.next_token();
    Ok(match t.token {
        Token::SingleQuotedString(s)
        | Token::EscapedStringLiteral(s)
        | Token::NationalStringLiteral(s)
        | Token::UnicodeStringLiteral(s) => Arg::Str(s),
        Token::DollarQuotedString(s) => Arg::Str(s.value),
        Token::Number(n, _) => Arg::Number(n),
        Token::Word(w) if w.quote_style.is_none() => Arg::Word(w.value.to_ascii_lowercase()),
        Token::Word(w) => Arg::Word(w.value),
        other => {
            return Err(ParserError::ParserError(format!(
                "expected an option value, found {other}"
            )));
        }
    })
}

/// PostgreSQL's checks of `COPY ... TO` options (its `ProcessCopyOptions`), and its
/// defaults.
fn check(raw: Vec<(String, Arg)>) -> Result<Options, Refusal> {
    let mut seen: Vec<&str> = Vec::new();
    let mut format = None;
    let mut delimiter = None;
    let mut null = None;
    let mut header = None;
    let mut quote = None;
    let mut escape = None;
    let mut force_quote = ForceQuote::None;
    for (name, arg) in &raw {
        if seen.contains(&name.as_str()) {
            return Err(refuse(SYNTAX, "conflicting or redundant options"));
        }
        seen.push(name);
        match name.as_str() {
            "format" => {
                format = Some(match text_arg(name, arg)?.as_str() {
                    "text" => Format::Text,
                    "csv" => Format::Csv,
                    "binary" => Format::Binary,
                    other => {
                        return Err(refuse(
                            INVALID_PARAMETER,
                            format!("COPY format \"{other}\" not recognized"),
                        ));
                    }
                })
            }
            "delimiter" => delimiter = Some(one_byte("delimiter", &text_arg(name, arg)?)?),
            "null" => null = Some(text_arg(name, arg)?),
            "header" => header = Some(boolean(name, arg)?),
            "quote" => quote = Some(one_byte("quote", &text_arg(name, arg)?)?),
            "escape" => escape = Some(one_byte("escape", &text_arg(name, arg)?)?),
            "force_quote" => {
                force_quote = match arg {
                    Arg::Star => ForceQuote::All,
                    Arg::Columns(c) => ForceQuote::Columns(c.clone()),
                    _ => {
                        return Err(refuse(
                            INVALID_PARAMETER,
                            "argument to option \"force_quote\" must be a list of column names",
                        ));
                    }
                }
            }
            "encoding" => {
                let e = text_arg(name, arg)?
                    .to_ascii_lowercase()
                    .replace(['-', '_'], "");
                if e != "utf8" && e != "unicode" {
                    return Err(Refusal {
                        code: NOT_SUPPORTED,
                        message: format!(
                            "COPY ENCODING {e:?} is not supported: this endpoint sends UTF8 only"
                        ),
                        hint: Some("leave ENCODING out, or convert on the client"),
                    });
                }
            }
            "freeze" | "force_not_null" | "force_null" | "default" => {
                return Err(refuse(
                    NOT_SUPPORTED,
                    format!(
                        "COPY {} can only be used with COPY FROM",
                        name.to_ascii_uppercase()
                    ),
                ));
            }
            other => {
                return Err(refuse(SYNTAX, format!("option \"{other}\" not recognized")));
            }
        }
    }
    let format = format.unwrap_or(Format::Text);
    if format == Format::Binary {
        for (given, what) in [
            (delimiter.is_some(), "DELIMITER"),
            (null.is_some(), "NULL"),
            (header == Some(true), "HEADER"),
        ] {
            if given {
                return Err(refuse(
                    SYNTAX,
                    format!("cannot specify {what} in BINARY mode"),
                ));
            }
        }
    }
    let csv = format == Format::Csv;
    let delimiter = delimiter.unwrap_or(if csv { b',' } else { b'\t' });
    let null = null
        .unwrap_or_else(|| if csv { String::new() } else { "\\N".into() })
        .into_bytes();
    if !csv {
        for (given, what) in [
            (quote.is_some(), "quote"),
            (escape.is_some(), "escape"),
            (force_quote != ForceQuote::None, "force quote"),
        ] {
            if given {
                return Err(refuse(
                    NOT_SUPPORTED,
                    format!("COPY {what} available only in CSV mode"),
                ));
            }
        }
    }
    if delimiter == b'\n' || delimiter == b'\r' {
        return Err(refuse(
            INVALID_PARAMETER,
            "COPY delimiter cannot be newline or carriage return",
        ));
    }
    if null.contains(&b'\n') || null.contains(&b'\r') {
        return Err(refuse(
            INVALID_PARAMETER,
            "COPY null representation cannot use newline or carriage return",
        ));
    }
    if format == Format::Text && b"\\.abcdefghijklmnopqrstuvwxyz0123456789".contains(&delimiter) {
        return Err(refuse(
            INVALID_PARAMETER,
            format!("COPY delimiter cannot be \"{}\"", delimiter as char),
        ));
    }
    let quote = quote.unwrap_or(b'"');
    let escape = escape.unwrap_or(quote);
    if format != Format::Binary && null.contains(&delimiter) {
        return Err(refuse(
            INVALID_PARAMETER,
            "COPY delimiter must not appear in the NULL specification",
        ));
    }
    if csv {
        if delimiter == quote {
            return Err(refuse(
                INVALID_PARAMETER,
                "COPY delimiter and quote must be different",
            ));
        }
        if null.contains(&quote) {
            return Err(refuse(
                INVALID_PARAMETER,
                "CSV quote character must not appear in the NULL specification",
            ));
        }
    }
    Ok(Options {
        format,
        delimiter,
        null,
        header: header.unwrap_or(false),
        quote,
        escape,
        force_quote,
    })
}

fn text_arg(name: &str, arg: &Arg) -> Result<String, Refusal> {
    match arg {
        Arg::Str(s) | Arg::Word(s) | Arg::Number(s) => Ok(s.clone()),
        _ => Err(refuse(SYNTAX, format!("{name} requires a parameter"))),
    }
}

fn one_byte(what: &str, s: &str) -> Result<u8, Refusal> {
    match s.as_bytes() {
        [b] => Ok(*b),
        _ => Err(refuse(
            NOT_SUPPORTED,
            format!("COPY {what} must be a single one-byte character"),
        )),
    }
}

/// `HEADER`, `HEADER true`, `HEADER off`, `HEADER 1`, ... as PostgreSQL's `defGetBoolean`.
fn boolean(name: &str, arg: &Arg) -> Result<bool, Refusal> {
    let v = match arg {
        Arg::None => return Ok(true),
        Arg::Str(s) | Arg::Word(s) | Arg::Number(s) => s.to_ascii_lowercase(),
        _ => String::new(),
    };
    match v.as_str() {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        "match" => Err(refuse(
            SYNTAX,
            "cannot use \"match\" with HEADER in COPY TO",
        )),
        _ => Err(refuse(SYNTAX, format!("{name} requires a Boolean value"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(sql: &str) -> Copy {
        assert!(is_copy(sql), "{sql}");
        parse(sql).unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }

    fn code(sql: &str) -> &'static str {
        parse(sql).expect_err(sql).code
    }

    #[test]
    fn only_copy_statements_are_recognised() {
        assert!(is_copy("COPY t TO STDOUT"));
        assert!(is_copy("  -- comment\n /* c */ copy(select 1) to stdout"));
        assert!(!is_copy("select 1"));
        assert!(!is_copy("copying"));
        assert!(!is_copy("copy_t"));
        assert!(!is_copy(""));
        assert!(!is_copy("cop"));
    }

    #[test]
    fn the_query_is_the_clients_own_text() {
        let c = ok("COPY ( select a, \"B\" from f where region = 'EU' and (x) > 1 ) TO STDOUT");
        assert_eq!(
            c.source,
            Source::Query("select a, \"B\" from f where region = 'EU' and (x) > 1".into())
        );
        assert_eq!(c.options.format, Format::Text);
        assert_eq!(c.options.delimiter, b'\t');
        assert_eq!(c.options.null, b"\\N");
        assert!(!c.options.header);
        // Multi-byte characters before and inside the query.
        let c = ok("/* é */ copy (select 'ü(' as \"ö\")\nto stdout;");
        assert_eq!(c.source, Source::Query("select 'ü(' as \"ö\"".into()));
    }

    #[test]
    fn a_table_and_its_columns_become_a_select() {
        let c = ok("copy sales_by_region to stdout");
        assert_eq!(c.source.select(), "SELECT * FROM sales_by_region");
        let c = ok("COPY public.\"Sales\" (day, \"Amount\") TO STDOUT");
        assert_eq!(
            c.source.select(),
            "SELECT day, \"Amount\" FROM public.\"Sales\""
        );
    }

    #[test]
    fn with_options_and_the_older_keywords() {
        let c = ok("COPY t TO STDOUT WITH (FORMAT csv, HEADER)");
        assert_eq!(c.options.format, Format::Csv);
        assert!(c.options.header);
        assert_eq!(c.options.delimiter, b',');
        assert_eq!(c.options.null, b"");
        assert_eq!((c.options.quote, c.options.escape), (b'"', b'"'));
        let c = ok(
            "COPY t TO STDOUT (FORMAT 'csv', HEADER false, DELIMITER ';', NULL 'NULL', QUOTE '''', ESCAPE E'\\\\', FORCE_QUOTE *)",
        );
        assert!(!c.options.header);
        assert_eq!(c.options.delimiter, b';');
        assert_eq!(c.options.null, b"NULL");
        assert_eq!((c.options.quote, c.options.escape), (b'\'', b'\\'));
        assert_eq!(c.options.force_quote, ForceQuote::All);
        let c = ok("COPY t TO STDOUT WITH (FORMAT csv, FORCE_QUOTE (a, \"B\"), HEADER on)");
        assert_eq!(
            c.options.force_quote,
            ForceQuote::Columns(vec![Ident::new("a"), Ident::with_quote('"', "B")])
        );
        assert!(c.options.header);
        let c = ok("COPY t TO STDOUT (DELIMITER E'|', NULL '')");
        assert_eq!(
            (c.options.delimiter, c.options.null.as_slice()),
            (b'|', &b""[..])
        );
        let c = ok("COPY t TO STDOUT CSV HEADER");
        assert_eq!(c.options.format, Format::Csv);
        assert!(c.options.header);
        let c = ok(
            "copy (select 1) to stdout with delimiter as ';' null as '-' csv header quote as '\"' force quote a, b",
        );
        assert_eq!(c.options.delimiter, b';');
        assert_eq!(c.options.null, b"-");
        assert_eq!(
            c.options.force_quote,
            ForceQuote::Columns(vec![Ident::new("a"), Ident::new("b")])
        );
        assert_eq!(ok("COPY t TO STDOUT BINARY").options.format, Format::Binary);
        assert_eq!(
            ok("COPY t TO STDOUT (FORMAT binary)").options.format,
            Format::Binary
        );
        assert_eq!(
            ok("COPY t TO STDOUT (ENCODING 'UTF8')").options.format,
            Format::Text
        );
    }

    #[test]
    fn copy_from_files_and_programs_are_refused() {
        assert_eq!(code("COPY t FROM STDIN"), "25006");
        assert_eq!(code("copy t (a, b) from stdin with (format csv)"), "25006");
        assert_eq!(code("COPY t FROM '/etc/passwd'"), "25006");
        assert_eq!(code("COPY t TO '/tmp/x.csv'"), "42501");
        assert_eq!(code("COPY (select 1) TO PROGRAM 'rm -rf /'"), "42501");
        let e = parse("COPY t FROM STDIN").unwrap_err();
        assert!(e.message.contains("read-only"), "{e:?}");
        assert!(e.hint.is_some());
    }

    #[test]
    fn options_postgresql_refuses_are_refused() {
        for (sql, want) in [
            ("COPY t TO STDOUT (FORMAT xml)", "22023"),
            ("COPY t TO STDOUT (FORMAT csv, FORMAT text)", "42601"),
            ("COPY t TO STDOUT (DELIMITER ';;')", "0A000"),
            ("COPY t TO STDOUT (DELIMITER 'é')", "0A000"),
            ("COPY t TO STDOUT (DELIMITER 'a')", "22023"),
            ("COPY t TO STDOUT (DELIMITER E'\\n')", "22023"),
            ("COPY t TO STDOUT (QUOTE '''')", "0A000"),
            ("COPY t TO STDOUT (FORCE_QUOTE *)", "0A000"),
            ("COPY t TO STDOUT (FORMAT csv, DELIMITER '\"')", "22023"),
            ("COPY t TO STDOUT (NULL 'a\tb')", "22023"),
            ("COPY t TO STDOUT (FORMAT binary, HEADER)", "42601"),
            ("COPY t TO STDOUT (FORMAT binary, DELIMITER ',')", "42601"),
            ("COPY t TO STDOUT (HEADER maybe)", "42601"),
            ("COPY t TO STDOUT (HEADER match)", "42601"),
            ("COPY t TO STDOUT (FREEZE)", "0A000"),
            ("COPY t TO STDOUT (FORCE_NOT_NULL (a))", "0A000"),
            ("COPY t TO STDOUT (ENCODING 'LATIN1')", "0A000"),
            ("COPY t TO STDOUT (BOGUS 1)", "42601"),
            ("COPY t TO STDOUT; SELECT 1", "42601"),
            ("COPY (select 1 TO STDOUT", "42601"),
            ("COPY t STDOUT", "42601"),
            ("COPY", "42601"),
        ] {
            assert_eq!(code(sql), want, "{sql}: {:?}", parse(sql));
        }
    }
}
