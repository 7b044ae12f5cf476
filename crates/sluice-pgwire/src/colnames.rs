//! Result column names as PostgreSQL gives them. DataFusion names an unaliased
//! expression by its text (`sum(sales_by_region.amount)`); PostgreSQL by its function,
//! column or type (`sum`, `count`, `amount`, `int4`), or `?column?` (its
//! `FigureColname`). Tools show and key on these names, so the outermost `SELECT`'s
//! unaliased items get PostgreSQL's name as an alias before planning.
//!
//! DataFusion wants the names of one `SELECT` distinct, so a name two items would share
//! (`count(*), count(region)`) is left as DataFusion makes it; so are expressions whose
//! PostgreSQL name is not certain here (subqueries and the less common forms).

use datafusion::sql::sqlparser::ast::{
    CastKind, DataType, Expr, Ident, ObjectNamePart, Query, SelectItem, SetExpr, Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// `sql` with PostgreSQL's names as aliases, when it has an item to name. The aliases
/// are written into the client's own text (after each item, found by its tokens): SQL
/// printed back from the parsed statement is not always SQL DataFusion reads the same.
pub fn name_columns(sql: &str) -> Option<String> {
    // Catalog queries of clients are left as they are: their shapes are compared with
    // PostgreSQL's as they come, and some of their forms (`ARRAY(SELECT ...)` in psql's
    // `\d`) are planned by datafusion-postgres only when unaliased.
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("select")
        || lower.contains("pg_catalog")
        || lower.contains("information_schema")
    {
        return None;
    }
    let dialect = PostgreSqlDialect {};
    let statements = Parser::parse_sql(&dialect, sql).ok()?;
    let [Statement::Query(q)] = statements.as_slice() else {
        return None;
    };
    let aliases = aliases(q)?;
    if aliases.iter().all(Option::is_none) {
        return None;
    }
    let ends = item_ends(sql)?;
    if ends.len() != aliases.len() {
        return None;
    }
    let mut out = sql.to_string();
    for (end, alias) in ends.iter().zip(&aliases).rev() {
        if let Some(name) = alias {
            out.insert_str(
                *end,
                &format!(" AS {}", Ident::with_quote('"', name.clone())),
            );
        }
    }
    Some(out)
}

/// Byte offsets just after each item of the outermost `SELECT` list, from its tokens:
/// the commas and the keyword that ends the list at parenthesis depth 0.
fn item_ends(sql: &str) -> Option<Vec<usize>> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    // Byte offset of each line start, to turn (line, column) into offsets.
    let mut lines = vec![0usize];
    lines.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
    let offset = |line: u64, col: u64| -> Option<usize> {
        let start = *lines.get((line as usize).checked_sub(1)?)?;
        let rest = &sql[start..];
        let col = (col as usize).checked_sub(1)?;
        Some(start + rest.char_indices().nth(col).map_or(rest.len(), |(i, _)| i))
    };
    let mut depth = 0i32;
    let mut in_list = false;
    let mut last_end: Option<usize> = None;
    let mut ends = Vec::new();
    for t in &tokens {
        match &t.token {
            Token::Whitespace(_) => continue,
            Token::LParen | Token::LBracket => depth += 1,
            Token::RParen | Token::RBracket => depth -= 1,
            _ => {}
        }
        if depth == 0 && !in_list {
            match &t.token {
                Token::Word(w) if w.keyword == Keyword::SELECT => {
                    in_list = true;
                    continue;
                }
                // The first SELECT may follow WITH's list; anything else before it
                // (a parenthesised SELECT) is not handled.
                Token::Word(w) if w.keyword == Keyword::WITH || w.keyword == Keyword::RECURSIVE => {
                }
                Token::Word(w) if w.quote_style.is_none() && w.keyword == Keyword::AS => {}
                Token::Word(_) | Token::Comma | Token::RParen => {}
                _ => return None,
            }
            continue;
        }
        if in_list && depth == 0 {
            let ends_list = match &t.token {
                Token::Comma => {
                    ends.push(last_end?);
                    last_end = None;
                    continue;
                }
                Token::SemiColon | Token::EOF => true,
                Token::Word(w) => {
                    matches!(
                        w.keyword,
                        Keyword::FROM
                            | Keyword::WHERE
                            | Keyword::GROUP
                            | Keyword::HAVING
                            | Keyword::ORDER
                            | Keyword::LIMIT
                            | Keyword::OFFSET
                            | Keyword::FETCH
                            | Keyword::UNION
                            | Keyword::INTERSECT
                            | Keyword::EXCEPT
                            | Keyword::WINDOW
                            | Keyword::INTO
                    ) && w.quote_style.is_none()
                }
                _ => false,
            };
            if ends_list {
                ends.push(last_end?);
                return Some(ends);
            }
        }
        if in_list {
            last_end = Some(offset(t.span.end.line, t.span.end.column)?);
        }
    }
    if in_list && depth == 0 {
        ends.push(last_end?);
        return Some(ends);
    }
    None
}

/// PostgreSQL's name for each item of the outermost `SELECT` that needs one as an alias.
fn aliases(q: &Query) -> Option<Vec<Option<String>>> {
    let mut body = q.body.as_ref();
    // A set operation's names are those of its first SELECT.
    let select = loop {
        match body {
            SetExpr::SetOperation { left, .. } => body = left.as_ref(),
            SetExpr::Select(select) => break select,
            _ => return None,
        }
    };
    let items = &select.projection;
    // Wildcards bring columns whose names are not known here: name nothing that could
    // collide with one.
    if items.iter().any(|i| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    }) {
        return None;
    }
    // The name each item has (alias, column, or what PostgreSQL would give).
    let names: Vec<Option<String>> = items
        .iter()
        .map(|i| match i {
            SelectItem::UnnamedExpr(e) => pg_name(e).map(|(n, _)| n),
            SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
            _ => None,
        })
        .collect();
    Some(
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let SelectItem::UnnamedExpr(e) = item else {
                    return None;
                };
                // A column keeps its own name already.
                if matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                    return None;
                }
                let name = names[i].as_ref()?;
                let shared = names
                    .iter()
                    .enumerate()
                    .any(|(j, n)| j != i && n.as_deref() == Some(name.as_str()));
                (!shared).then(|| name.clone())
            })
            .collect(),
    )
}

fn ident_name(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// PostgreSQL's name of an expression and how strong it is (2: a column or function
/// name, 1: a type name or keyword that a stronger inner name overrides), or `None`
/// when not certain.
fn pg_name(e: &Expr) -> Option<(String, u8)> {
    Some(match e {
        Expr::Identifier(i) => (ident_name(i), 2),
        Expr::CompoundIdentifier(parts) => (ident_name(parts.last()?), 2),
        Expr::Function(f) => match f.name.0.last()? {
            ObjectNamePart::Identifier(i) if !i.value.eq_ignore_ascii_case("array") => {
                (ident_name(i), 2)
            }
            _ => return None,
        },
        Expr::Cast {
            kind: CastKind::Cast | CastKind::DoubleColon,
            expr,
            data_type,
            ..
        } => match pg_name(expr) {
            Some((n, 2)) => (n, 2),
            _ => (type_name(data_type)?, 1),
        },
        Expr::Nested(inner) => pg_name(inner)?,
        Expr::Case { .. } => ("case".into(), 1),
        Expr::Value(_) | Expr::BinaryOp { .. } | Expr::UnaryOp { .. } => ("?column?".into(), 0),
        _ => return None,
    })
}

/// The internal name PostgreSQL gives a cast's target type (`integer` is `int4`).
fn type_name(t: &DataType) -> Option<String> {
    Some(
        match t {
            DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) => "int4",
            DataType::BigInt(_) | DataType::Int8(_) => "int8",
            DataType::SmallInt(_) | DataType::Int2(_) => "int2",
            DataType::Real | DataType::Float4 => "float4",
            DataType::DoublePrecision | DataType::Double(_) | DataType::Float8 => "float8",
            DataType::Numeric(_) | DataType::Decimal(_) => "numeric",
            DataType::Text => "text",
            DataType::Varchar(_) | DataType::CharacterVarying(_) => "varchar",
            DataType::Boolean | DataType::Bool => "bool",
            DataType::Date => "date",
            _ => return None,
        }
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(sql: &str) -> String {
        name_columns(sql).unwrap_or_else(|| sql.to_string())
    }

    #[test]
    fn unaliased_items_get_postgresql_names() {
        assert_eq!(
            named(
                "select region, sum(amount), count(*), t.day::text, 1::integer, amount * 2 as x from t group by 1"
            ),
            r#"select region, sum(amount) AS "sum", count(*) AS "count", t.day::text AS "day", 1::integer AS "int4", amount * 2 as x from t group by 1"#
        );
        // Shared names stay DataFusion's; so do items next to a wildcard.
        assert_eq!(
            named("select count(*), count(region),\n  max(day)\nfrom t"),
            "select count(*), count(region),\n  max(day) AS \"max\"\nfrom t"
        );
        assert_eq!(name_columns("select *, sum(x) from t"), None);
        // A set operation: its first SELECT; a CTE's list is not the outermost.
        assert_eq!(
            named("select min(a) from t union all select max(a) from t"),
            r#"select min(a) AS "min" from t union all select max(a) from t"#
        );
        assert_eq!(
            named("with c as (select sum(a) from t) select ARRAY(select 1), upper(b) from c;"),
            r#"with c as (select sum(a) from t) select ARRAY(select 1), upper(b) AS "upper" from c;"#
        );
        assert_eq!(name_columns("(select sum(a) from t) union select 1"), None);
        assert_eq!(name_columns("show timezone"), None);
        assert_eq!(
            name_columns("select count(*) from pg_catalog.pg_class"),
            None
        );
        assert_eq!(name_columns("select a, b as c from t"), None);
        assert_eq!(named("select sum(a)"), r#"select sum(a) AS "sum""#);
    }
}
