//! `$filter` and `$orderby` expressions: a lexer and a recursive-descent parser for the
//! subset of the OData v4 URL conventions that BI tools send (comparison, logical and
//! string operators, null, date and date-time literals), producing a small AST that
//! [`crate::plan`] turns into DataFusion expressions.
//!
//! Anything outside that subset (arithmetic, lambdas, `in`, navigation paths, other
//! functions) is rejected with [`Unsupported`](ParseError::Unsupported) naming it: a tool
//! must never get rows filtered by an expression we only half understood.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime};

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    /// Kept as written so decimals compare exactly.
    Decimal(String),
    Double(f64),
    String(String),
    Date(NaiveDate),
    DateTime(DateTime<FixedOffset>),
    TimeOfDay(NaiveTime),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Contains,
    StartsWith,
    EndsWith,
    ToLower,
    ToUpper,
    Length,
    Trim,
    Year,
    Month,
    Day,
}

impl Func {
    fn parse(name: &str) -> Option<(Func, usize)> {
        Some(match name {
            "contains" => (Func::Contains, 2),
            "startswith" => (Func::StartsWith, 2),
            "endswith" => (Func::EndsWith, 2),
            "tolower" => (Func::ToLower, 1),
            "toupper" => (Func::ToUpper, 1),
            "length" => (Func::Length, 1),
            "trim" => (Func::Trim, 1),
            "year" => (Func::Year, 1),
            "month" => (Func::Month, 1),
            "day" => (Func::Day, 1),
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Func::Contains => "contains",
            Func::StartsWith => "startswith",
            Func::EndsWith => "endswith",
            Func::ToLower => "tolower",
            Func::ToUpper => "toupper",
            Func::Length => "length",
            Func::Trim => "trim",
            Func::Year => "year",
            Func::Month => "month",
            Func::Day => "day",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Property(String),
    Literal(Literal),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Call(Func, Vec<Expr>),
}

/// One `$orderby` item.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderBy {
    pub property: String,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// Malformed: what was expected, and where (0-based character offset).
    Syntax { message: String, at: usize },
    /// Well-formed OData we deliberately don't implement (501).
    Unsupported(String),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Syntax { message, at } => write!(f, "{message} (at character {at})"),
            ParseError::Unsupported(what) => write!(f, "{what} is not supported"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Lit(Literal),
    Open,
    Close,
    Comma,
    /// A character no OData expression we accept contains (`/`, `@`, `:` ...).
    Other(char),
}

fn syntax(message: impl Into<String>, at: usize) -> ParseError {
    ParseError::Syntax {
        message: message.into(),
        at,
    }
}

fn lex(input: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                i += 1;
                continue;
            }
            '(' => {
                out.push((Tok::Open, start));
                i += 1;
            }
            ')' => {
                out.push((Tok::Close, start));
                i += 1;
            }
            ',' => {
                out.push((Tok::Comma, start));
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(syntax("unterminated string literal", start)),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push((Tok::Lit(Literal::String(s)), start));
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let mut j = i + 1;
                while j < chars.len()
                    && (chars[j].is_ascii_alphanumeric()
                        || matches!(chars[j], '-' | ':' | '.' | '+'))
                {
                    // A sign only continues the token after an exponent marker or inside a
                    // date-time offset; `1-2` is not a token, but then neither is it OData.
                    j += 1;
                }
                let word: String = chars[i..j].iter().collect();
                out.push((Tok::Lit(number_or_date(&word, start)?), start));
                i = j;
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let word: String = chars[i..j].iter().collect();
                i = j;
                // typed literals: duration'P1D', geography'...', binary'...'
                if chars.get(i) == Some(&'\'') {
                    return Err(ParseError::Unsupported(format!("the {word}'...' literal")));
                }
                out.push((Tok::Ident(word), start));
            }
            other => {
                out.push((Tok::Other(other), start));
                i += 1;
            }
        }
    }
    Ok(out)
}

fn number_or_date(word: &str, at: usize) -> Result<Literal, ParseError> {
    let b = word.as_bytes();
    if b.len() >= 10 && b[4] == b'-' && b[7] == b'-' {
        if b.len() == 10 {
            return NaiveDate::parse_from_str(word, "%Y-%m-%d")
                .map(Literal::Date)
                .map_err(|_| syntax(format!("'{word}' is not a valid date (YYYY-MM-DD)"), at));
        }
        if b[10] == b'T' {
            return parse_datetime(word).map(Literal::DateTime).ok_or_else(|| {
                syntax(
                    format!(
                        "'{word}' is not a valid date-time: write YYYY-MM-DDThh:mm[:ss[.fff]] followed by Z or an offset like +01:00"
                    ),
                    at,
                )
            });
        }
    }
    if b.len() >= 5 && b[2] == b':' {
        return NaiveTime::parse_from_str(word, "%H:%M:%S%.f")
            .or_else(|_| NaiveTime::parse_from_str(word, "%H:%M"))
            .map(Literal::TimeOfDay)
            .map_err(|_| {
                syntax(
                    format!("'{word}' is not a valid time of day (hh:mm:ss)"),
                    at,
                )
            });
    }
    if let Ok(v) = word.parse::<i64>() {
        return Ok(Literal::Int(v));
    }
    let plain_decimal = word
        .trim_start_matches('-')
        .split_once('.')
        .is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        });
    if plain_decimal {
        return Ok(Literal::Decimal(word.to_string()));
    }
    match word.parse::<f64>() {
        Ok(v) if v.is_finite() && !word.contains(['i', 'I', 'n', 'N']) => Ok(Literal::Double(v)),
        _ => Err(syntax(
            format!("'{word}' is not a number, date or date-time"),
            at,
        )),
    }
}

fn parse_datetime(word: &str) -> Option<DateTime<FixedOffset>> {
    if !(word.ends_with('Z') || word.ends_with('z') || word[10..].contains(['+', '-'])) {
        // OData date-times always carry an offset: without one, "when" is ambiguous.
        return None;
    }
    DateTime::parse_from_rfc3339(word).ok().or_else(|| {
        // hh:mm without seconds is valid OData but not RFC 3339.
        let (body, zone) = word.split_at(16);
        DateTime::parse_from_rfc3339(&format!("{body}:00{zone}")).ok()
    })
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    len: usize,
}

const COMPARISONS: &[(&str, CmpOp)] = &[
    ("eq", CmpOp::Eq),
    ("ne", CmpOp::Ne),
    ("gt", CmpOp::Gt),
    ("ge", CmpOp::Ge),
    ("lt", CmpOp::Lt),
    ("le", CmpOp::Le),
];

/// Operators of the URL conventions we recognise in order to refuse them by name.
const UNSUPPORTED_OPERATORS: &[&str] = &["add", "sub", "mul", "div", "divby", "mod", "in", "has"];

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn at(&self) -> usize {
        self.toks.get(self.pos).map(|(_, a)| *a).unwrap_or(self.len)
    }

    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w == k)
    }

    fn expect(&mut self, t: Tok, what: &str) -> Result<(), ParseError> {
        if self.peek() == Some(&t) {
            self.pos += 1;
            Ok(())
        } else {
            Err(syntax(format!("expected {what}"), self.at()))
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.not()?;
        while self.keyword("and") {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.keyword("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr, ParseError> {
        let left = self.primary()?;
        if let Some(Tok::Ident(w)) = self.peek() {
            if let Some((_, op)) = COMPARISONS.iter().find(|(k, _)| k == w) {
                let op = *op;
                self.pos += 1;
                let right = self.primary()?;
                return Ok(Expr::Cmp(op, Box::new(left), Box::new(right)));
            }
            if UNSUPPORTED_OPERATORS.contains(&w.as_str()) {
                return Err(ParseError::Unsupported(format!(
                    "the '{w}' operator in $filter"
                )));
            }
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let at = self.at();
        let Some((tok, _)) = self.toks.get(self.pos).cloned() else {
            return Err(syntax("expression ends too early", at));
        };
        self.pos += 1;
        match tok {
            Tok::Open => {
                let e = self.or()?;
                self.expect(Tok::Close, "')'")?;
                Ok(e)
            }
            Tok::Lit(l) => Ok(Expr::Literal(l)),
            Tok::Ident(w) if w == "null" => Ok(Expr::Literal(Literal::Null)),
            Tok::Ident(w) if w == "true" => Ok(Expr::Literal(Literal::Bool(true))),
            Tok::Ident(w) if w == "false" => Ok(Expr::Literal(Literal::Bool(false))),
            Tok::Ident(w) if w == "INF" || w == "NaN" => {
                Err(ParseError::Unsupported(format!("the {w} literal")))
            }
            Tok::Ident(w) if self.peek() == Some(&Tok::Open) => {
                let Some((func, arity)) = Func::parse(&w) else {
                    return Err(ParseError::Unsupported(format!("the function {w}()")));
                };
                self.pos += 1;
                let mut args = Vec::new();
                if self.peek() != Some(&Tok::Close) {
                    args.push(self.or()?);
                    while self.peek() == Some(&Tok::Comma) {
                        self.pos += 1;
                        args.push(self.or()?);
                    }
                }
                self.expect(Tok::Close, "')' after the function's arguments")?;
                if args.len() != arity {
                    return Err(syntax(
                        format!("{w}() takes {arity} argument(s), got {}", args.len()),
                        at,
                    ));
                }
                Ok(Expr::Call(func, args))
            }
            Tok::Ident(w) => {
                if self.peek() == Some(&Tok::Other('/')) {
                    return Err(ParseError::Unsupported(format!(
                        "the path '{w}/...' (navigation and lambda operators)"
                    )));
                }
                Ok(Expr::Property(w))
            }
            Tok::Other('@') => Err(ParseError::Unsupported("parameter aliases (@name)".into())),
            Tok::Other('-') => Err(ParseError::Unsupported("negation of an expression".into())),
            Tok::Other(c) => Err(syntax(format!("unexpected '{c}'"), at)),
            Tok::Close => Err(syntax("unexpected ')'", at)),
            Tok::Comma => Err(syntax("unexpected ','", at)),
        }
    }
}

/// Parse a `$filter` value.
pub fn parse_filter(input: &str) -> Result<Expr, ParseError> {
    let toks = lex(input)?;
    let mut p = Parser {
        len: input.chars().count(),
        toks,
        pos: 0,
    };
    let e = p.or()?;
    if p.pos < p.toks.len() {
        if let Some(Tok::Ident(w)) = p.peek()
            && UNSUPPORTED_OPERATORS.contains(&w.as_str())
        {
            return Err(ParseError::Unsupported(format!(
                "the '{w}' operator in $filter"
            )));
        }
        return Err(syntax(
            "unexpected text after the expression (did you mean 'and' or 'or'?)",
            p.at(),
        ));
    }
    Ok(e)
}

/// Parse an `$orderby` value: `name [asc|desc], ...`.
pub fn parse_orderby(input: &str) -> Result<Vec<OrderBy>, ParseError> {
    let mut out = Vec::new();
    let mut offset = 0;
    for item in input.split(',') {
        let words: Vec<&str> = item.split_whitespace().collect();
        let at = offset + item.len() - item.trim_start().len();
        offset += item.len() + 1;
        let (property, descending) = match words.as_slice() {
            [p] => (*p, false),
            [p, "asc"] => (*p, false),
            [p, "desc"] => (*p, true),
            [] => return Err(syntax("empty $orderby item", at)),
            _ => {
                return Err(syntax(
                    format!("'{}' is not 'property [asc|desc]'", item.trim()),
                    at,
                ));
            }
        };
        if property.contains(['/', '(']) {
            return Err(ParseError::Unsupported(format!(
                "ordering by an expression ('{property}'); order by a property name"
            )));
        }
        if !property.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(syntax(format!("'{property}' is not a property name"), at));
        }
        out.push(OrderBy {
            property: property.to_string(),
            descending,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Expr {
        parse_filter(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn prop(n: &str) -> Box<Expr> {
        Box::new(Expr::Property(n.into()))
    }
    fn lit(l: Literal) -> Box<Expr> {
        Box::new(Expr::Literal(l))
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let e = p("a eq 1 or b eq 2 and not c eq 3");
        let expected = Expr::Or(
            Box::new(Expr::Cmp(CmpOp::Eq, prop("a"), lit(Literal::Int(1)))),
            Box::new(Expr::And(
                Box::new(Expr::Cmp(CmpOp::Eq, prop("b"), lit(Literal::Int(2)))),
                Box::new(Expr::Not(Box::new(Expr::Cmp(
                    CmpOp::Eq,
                    prop("c"),
                    lit(Literal::Int(3)),
                )))),
            )),
        );
        assert_eq!(e, expected);
        assert_eq!(
            p("(a eq 1 or b eq 2) and c eq 3"),
            Expr::And(
                Box::new(Expr::Or(
                    Box::new(Expr::Cmp(CmpOp::Eq, prop("a"), lit(Literal::Int(1)))),
                    Box::new(Expr::Cmp(CmpOp::Eq, prop("b"), lit(Literal::Int(2)))),
                )),
                Box::new(Expr::Cmp(CmpOp::Eq, prop("c"), lit(Literal::Int(3)))),
            )
        );
    }

    #[test]
    fn literals() {
        let l = |s: &str| match p(&format!("x eq {s}")) {
            Expr::Cmp(_, _, r) => *r,
            other => panic!("{other:?}"),
        };
        assert_eq!(l("'it''s'"), Expr::Literal(Literal::String("it's".into())));
        assert_eq!(l("-42"), Expr::Literal(Literal::Int(-42)));
        assert_eq!(l("12.50"), Expr::Literal(Literal::Decimal("12.50".into())));
        assert_eq!(l("1.5e3"), Expr::Literal(Literal::Double(1500.0)));
        assert_eq!(l("null"), Expr::Literal(Literal::Null));
        assert_eq!(l("true"), Expr::Literal(Literal::Bool(true)));
        assert_eq!(
            l("2024-02-29"),
            Expr::Literal(Literal::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()))
        );
        let Expr::Literal(Literal::DateTime(dt)) = l("2024-01-02T03:04:05.5+01:00") else {
            panic!()
        };
        assert_eq!(dt.to_rfc3339(), "2024-01-02T03:04:05.500+01:00");
        let Expr::Literal(Literal::DateTime(dt)) = l("2024-01-02T03:04Z") else {
            panic!()
        };
        assert_eq!(dt.to_rfc3339(), "2024-01-02T03:04:00+00:00");
        assert_eq!(
            l("13:45:00"),
            Expr::Literal(Literal::TimeOfDay(
                NaiveTime::from_hms_opt(13, 45, 0).unwrap()
            ))
        );
    }

    #[test]
    fn functions() {
        assert_eq!(
            p("contains(name,'a b')"),
            Expr::Call(
                Func::Contains,
                vec![
                    Expr::Property("name".into()),
                    Expr::Literal(Literal::String("a b".into()))
                ]
            )
        );
        assert_eq!(
            p("year(day) ge 2024"),
            Expr::Cmp(
                CmpOp::Ge,
                Box::new(Expr::Call(Func::Year, vec![Expr::Property("day".into())])),
                lit(Literal::Int(2024))
            )
        );
    }

    #[test]
    fn errors_say_what_and_where() {
        let err = |s: &str| parse_filter(s).unwrap_err();
        assert!(matches!(err("x eq 'abc"), ParseError::Syntax { at: 5, .. }));
        assert!(matches!(err("x eq"), ParseError::Syntax { .. }));
        assert!(matches!(err("(x eq 1"), ParseError::Syntax { .. }));
        assert!(matches!(err("x eq 1 y"), ParseError::Syntax { .. }));
        assert!(
            err("x eq 2024-13-01")
                .to_string()
                .contains("not a valid date"),
            "{}",
            err("x eq 2024-13-01")
        );
        // A date-time without an offset is ambiguous.
        assert!(matches!(
            err("x eq 2024-01-01T00:00:00"),
            ParseError::Syntax { .. }
        ));
        assert_eq!(
            err("contains(x)").to_string(),
            "contains() takes 2 argument(s), got 1 (at character 0)"
        );
    }

    #[test]
    fn unsupported_constructs_are_named() {
        let err = |s: &str| parse_filter(s).unwrap_err().to_string();
        assert_eq!(
            err("a add 1 eq 2"),
            "the 'add' operator in $filter is not supported"
        );
        assert_eq!(
            err("a in ('x','y')"),
            "the 'in' operator in $filter is not supported"
        );
        assert_eq!(
            err("substring(a,1) eq 'x'"),
            "the function substring() is not supported"
        );
        assert!(err("tags/any(t: t eq 'x')").contains("navigation and lambda"));
        assert!(err("a eq @p").contains("parameter aliases"));
        assert!(err("a eq duration'P1D'").contains("duration'...'"));
    }

    #[test]
    fn orderby() {
        assert_eq!(
            parse_orderby("region, amount desc,day asc").unwrap(),
            vec![
                OrderBy {
                    property: "region".into(),
                    descending: false
                },
                OrderBy {
                    property: "amount".into(),
                    descending: true
                },
                OrderBy {
                    property: "day".into(),
                    descending: false
                },
            ]
        );
        assert!(matches!(
            parse_orderby("a,,b"),
            Err(ParseError::Syntax { .. })
        ));
        assert!(matches!(
            parse_orderby("a sideways"),
            Err(ParseError::Syntax { .. })
        ));
        assert!(matches!(
            parse_orderby("length(a)"),
            Err(ParseError::Unsupported(_))
        ));
    }
}
