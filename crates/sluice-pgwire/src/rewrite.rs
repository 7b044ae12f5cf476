//! Catalog queries of known clients that DataFusion cannot plan, rewritten to SQL it runs
//! before they reach `datafusion-postgres` (simple and extended protocol alike; bound
//! parameters keep their `$n` places). Each rewrite recognises one client's query by its
//! shape and answers with the columns, names and types the client reads.

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, Ident, Query, Select, SelectItem, SetExpr, Statement,
    TableFactor, Value, ValueWithSpan, visit_expressions, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// Substrings (lowercase) one of the rewritten queries contains: other SQL is not even
/// parsed here.
const MARKERS: &[&str] = &[
    "_pg_expandarray",
    "json_build_object",
    "regproc",
    "typreceive",
    "(select",
    "null as",
    "generate_subscripts",
];

/// The SQL to run instead of `sql`, when it is (or contains) a query rewritten here.
pub fn rewrite(sql: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    if !MARKERS.iter().any(|m| lower.contains(m)) {
        return None;
    }
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut changed = false;
    let out: Vec<String> = statements
        .iter()
        .map(|s| match rewrite_statement(s) {
            Some(new) => {
                changed = true;
                new
            }
            None => s.to_string(),
        })
        .collect();
    if changed {
        tracing::debug!("catalog query rewritten: {}", out.join("; "));
    }
    changed.then(|| out.join(";\n"))
}

fn rewrite_statement(s: &Statement) -> Option<String> {
    let Statement::Query(q) = s else {
        return None;
    };
    if let Some(new) = pgjdbc_primary_keys(q).or_else(|| sqlalchemy_constraint_columns(q)) {
        return Some(new);
    }
    // The general rewrites, one after the other.
    let mut current = s.clone();
    let mut changed = false;
    for rule in [
        sqlalchemy_columns,
        regproc_names,
        aggregate_catalog_subqueries,
        null_columns_as_text,
    ] {
        if let Some(new) = rule(&current) {
            current = new;
            changed = true;
        }
    }
    changed.then(|| current.to_string())
}

/// `SELECT NULL AS x`: PostgreSQL types the column `text` (pgjdbc's `getTables` reads
/// `TABLE_CAT` so); DataFusion's `NULL` has no type, sent as `unknown`.
fn null_columns_as_text(s: &Statement) -> Option<Statement> {
    let mut s = s.clone();
    let Statement::Query(q) = &mut s else {
        return None;
    };
    let SetExpr::Select(select) = q.body.as_mut() else {
        return None;
    };
    let mut changed = false;
    for item in select.projection.iter_mut() {
        if let SelectItem::ExprWithAlias { expr, .. } = item
            && matches!(
                expr,
                Expr::Value(ValueWithSpan {
                    value: Value::Null,
                    ..
                })
            )
        {
            *expr = parse_expr("CAST(NULL AS TEXT)")?;
            changed = true;
        }
    }
    changed.then_some(s)
}

/// A scalar subquery of a catalog query that is not an aggregate, as Npgsql's
/// `(SELECT rngtypid FROM pg_range WHERE rngmultitypid = typ.oid)`: DataFusion plans a
/// correlated scalar subquery only when it is aggregated, so its one column is read with
/// `max(...)`: the same value when there is at most one row, as PostgreSQL requires.
fn aggregate_catalog_subqueries(s: &Statement) -> Option<Statement> {
    const AGGREGATES: &[&str] = &[
        "count",
        "max",
        "min",
        "sum",
        "avg",
        "array_agg",
        "bool_and",
        "bool_or",
        "string_agg",
    ];
    let mut s = s.clone();
    let mut changed = false;
    let _ = visit_expressions_mut(&mut s, |e| {
        let Expr::Subquery(q) = e else {
            return ControlFlow::<()>::Continue(());
        };
        if q.limit_clause.is_some() || q.fetch.is_some() {
            return ControlFlow::Continue(());
        }
        let SetExpr::Select(select) = q.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        let catalog = select.from.iter().any(|t| {
            matches!(&t.relation, TableFactor::Table { name, .. }
                if name.to_string().to_ascii_lowercase().rsplit('.').next().is_some_and(|n| n.starts_with("pg_")))
        });
        let plain = matches!(select.group_by, GroupByExpr::Expressions(ref g, _) if g.is_empty())
            && select.having.is_none()
            && select.distinct.is_none();
        if !catalog || !plain || select.projection.len() != 1 {
            return ControlFlow::Continue(());
        }
        let inner = match &mut select.projection[0] {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => return ControlFlow::Continue(()),
        };
        if let Expr::Function(f) = inner
            && AGGREGATES.contains(&f.name.to_string().to_ascii_lowercase().as_str())
        {
            return ControlFlow::Continue(());
        }
        if let Some(wrapped) = parse_expr(&format!("max({inner})")) {
            *inner = wrapped;
            changed = true;
        }
        ControlFlow::Continue(())
    });
    changed.then_some(s)
}

/// `pg_type`'s function columns (`typinput`, `typoutput`, `typreceive`, `typsend`) hold
/// the function's name here, so `typinput = 'pg_catalog.array_in'::regproc` (pgjdbc's
/// array test) compares names: `typinput = 'array_in'`. (`datafusion-postgres` would look
/// the name up as a `pg_proc` oid and compare that number with the name.)
fn regproc_names(s: &Statement) -> Option<Statement> {
    const COLUMNS: &[&str] = &["typinput", "typoutput", "typreceive", "typsend"];
    let is_function_column = |e: &Expr| {
        let name = match e {
            Expr::Identifier(i) => &i.value,
            Expr::CompoundIdentifier(parts) => match parts.last() {
                Some(i) => &i.value,
                None => return false,
            },
            _ => return false,
        };
        COLUMNS.contains(&name.to_ascii_lowercase().as_str())
    };
    let proc_name = |e: &Expr| -> Option<String> {
        let Expr::Cast {
            expr, data_type, ..
        } = e
        else {
            return None;
        };
        let ty = data_type.to_string().to_ascii_lowercase();
        if ty != "regproc" && ty != "pg_catalog.regproc" {
            return None;
        }
        let Expr::Value(ValueWithSpan {
            value: Value::SingleQuotedString(name),
            ..
        }) = expr.as_ref()
        else {
            return None;
        };
        Some(name.trim_start_matches("pg_catalog.").to_string())
    };
    let mut s = s.clone();
    let mut changed = false;
    let _ = visit_expressions_mut(&mut s, |e| {
        if let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq | BinaryOperator::NotEq,
            right,
        } = e
        {
            if is_function_column(left)
                && let Some(name) = proc_name(right)
            {
                **right = Expr::Value(Value::SingleQuotedString(name).into());
                changed = true;
            } else if is_function_column(right)
                && let Some(name) = proc_name(left)
            {
                **left = Expr::Value(Value::SingleQuotedString(name).into());
                changed = true;
            } else if is_function_column(left) || is_function_column(right) {
                // A join on the function's oid (Npgsql's `proc.oid = typ.typreceive`) is a
                // join on its name.
                for side in [&mut **left, &mut **right] {
                    if let Expr::CompoundIdentifier(parts) = side
                        && parts.len() == 2
                        && parts[1].value.eq_ignore_ascii_case("oid")
                    {
                        parts[1] = Ident::new("proname");
                        changed = true;
                    }
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    changed.then_some(s)
}

fn parse_expr(sql: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .ok()?
        .parse_expr()
        .ok()
}

/// The `$n` placeholders in `e`.
fn placeholders(e: &Expr, into: &mut Vec<String>) {
    let _ = visit_expressions(e, |e| {
        if let Expr::Value(ValueWithSpan {
            value: Value::Placeholder(p),
            ..
        }) = e
        {
            into.push(p.clone());
        }
        ControlFlow::<()>::Continue(())
    });
}

fn has_subquery(e: &Expr) -> bool {
    visit_expressions(e, |e| match e {
        Expr::Subquery(_) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// SQLAlchemy 2's column reflection (`Inspector.get_columns`) reads defaults, identity
/// options and collations with correlated scalar subqueries inside `CASE` branches, which
/// DataFusion cannot plan. Feeds have no defaults, identities or collations: every branch
/// with a subquery is `NULL` here (its result as text, as PostgreSQL's `pg_get_expr` and
/// SQLAlchemy's `json_build_object` read as strings). The bound parameters the removed
/// subqueries held stay in the statement, in a condition that is always true, so the
/// client's `$n` still line up.
fn sqlalchemy_columns(s: &Statement) -> Option<Statement> {
    let text = s.to_string();
    if !(text.contains("pg_catalog.pg_attribute")
        && text.contains("pg_catalog.pg_attrdef")
        && text.contains("json_build_object"))
    {
        return None;
    }
    let mut s = s.clone();
    let mut kept = Vec::new();
    let mut changed = false;
    let _ = visit_expressions_mut(&mut s, |e| {
        if let Expr::Case { conditions, .. } = e {
            for when in conditions.iter_mut() {
                if has_subquery(&when.result) {
                    placeholders(&when.result, &mut kept);
                    when.result = parse_expr("CAST(NULL AS TEXT)").expect("an expression");
                    changed = true;
                }
                if has_subquery(&when.condition) {
                    placeholders(&when.condition, &mut kept);
                    when.condition = Expr::Value(Value::Boolean(false).into());
                    changed = true;
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if !changed {
        return None;
    }
    if !kept.is_empty() {
        let Statement::Query(q) = &mut s else {
            return None;
        };
        let SetExpr::Select(select) = q.body.as_mut() else {
            return None;
        };
        let keep = kept
            .iter()
            .map(|p| format!("{p} IS NULL"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let keep = parse_expr(&format!("({keep} OR TRUE)"))?;
        select.selection = Some(match select.selection.take() {
            Some(w) => Expr::BinaryOp {
                left: Box::new(Expr::Nested(Box::new(w))),
                op: BinaryOperator::And,
                right: Box::new(keep),
            },
            None => keep,
        });
    }
    Some(s)
}

fn select(q: &Query) -> Option<&Select> {
    match q.body.as_ref() {
        SetExpr::Select(s) => Some(s),
        _ => None,
    }
}

/// The terms of a conjunction.
fn conjuncts(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut v = conjuncts(left);
            v.extend(conjuncts(right));
            v
        }
        Expr::Nested(inner) => conjuncts(inner),
        other => vec![other],
    }
}

/// pgjdbc's `DatabaseMetaData.getPrimaryKeys`:
///
/// ```sql
/// SELECT result.TABLE_CAT, result.TABLE_SCHEM, result.TABLE_NAME, result.COLUMN_NAME,
///        result.KEY_SEQ, result.PK_NAME
/// FROM (SELECT NULL AS TABLE_CAT, n.nspname AS TABLE_SCHEM, ct.relname AS TABLE_NAME,
///         a.attname AS COLUMN_NAME, (information_schema._pg_expandarray(i.indkey)).n AS KEY_SEQ,
///         ci.relname AS PK_NAME, information_schema._pg_expandarray(i.indkey) AS KEYS, ...
///       FROM pg_catalog.pg_class ct JOIN pg_catalog.pg_attribute a ... JOIN pg_catalog.pg_index i ...
///       WHERE true AND n.nspname = 'public' AND ct.relname = 't' AND i.indisprimary) result
/// WHERE result.A_ATTNUM = (result.KEYS).x ORDER BY result.table_name, result.pk_name, result.key_seq
/// ```
///
/// The schema and table conditions are kept, the rest reads `sluice_primary_keys()`.
fn pgjdbc_primary_keys(q: &Query) -> Option<String> {
    let outer = select(q)?;
    let [from] = outer.from.as_slice() else {
        return None;
    };
    let TableFactor::Derived { subquery, .. } = &from.relation else {
        return None;
    };
    let inner = select(subquery)?;
    let inner_text = inner.to_string();
    if !inner_text.contains("_pg_expandarray(i.indkey)") || !inner_text.contains("indisprimary") {
        return None;
    }
    let mut conditions = vec!["n.nspname = 'public'".to_string()];
    for c in conjuncts(inner.selection.as_ref()?) {
        let text = c.to_string();
        if text.eq_ignore_ascii_case("true") || text.ends_with("indisprimary") {
            continue;
        }
        if !(text.starts_with("n.nspname") || text.starts_with("ct.relname")) {
            return None;
        }
        conditions.push(text);
    }
    Some(format!(
        "SELECT CAST(NULL AS TEXT) AS table_cat, n.nspname AS table_schem, ct.relname AS table_name, \
         k.column_name AS column_name, k.key_seq AS key_seq, k.pk_name AS pk_name \
         FROM {f}() AS k \
         JOIN pg_catalog.pg_class AS ct ON ct.relname = k.table_name \
         JOIN pg_catalog.pg_namespace AS n ON ct.relnamespace = n.oid \
         WHERE {w} ORDER BY table_name, pk_name, key_seq",
        f = crate::keys::FUNCTION,
        w = conditions.join(" AND "),
    ))
}

/// SQLAlchemy 2's constraint reflection (`get_pk_constraint`, and `get_unique_constraints`
/// with `contype = 'u'`): an outer aggregation over
///
/// ```sql
/// (SELECT con.conrelid, con.conname, con.description, con.ord, con.indnkeyatts,
///         con.indnullsnotdistinct, pg_attribute.attname
///  FROM pg_attribute JOIN (SELECT ..., unnest(pg_index.indkey) AS attnum,
///         generate_subscripts(pg_index.indkey, 1) AS ord, ...
///       FROM pg_constraint JOIN pg_index ... WHERE contype = $3 AND conrelid IN ($4)) AS con ...
///  WHERE con.conrelid IN ($4)) AS attr
/// ```
///
/// The `attr` rows come from `sluice_primary_keys()` instead (primary keys only: feeds
/// have no other constraints); the outer query is kept, and so are the `$n` of the
/// replaced part, in conditions that are always true.
fn sqlalchemy_constraint_columns(q: &Query) -> Option<String> {
    let mut q = q.clone();
    let SetExpr::Select(outer) = q.body.as_mut() else {
        return None;
    };
    let [from] = outer.from.as_mut_slice() else {
        return None;
    };
    let TableFactor::Derived { subquery, .. } = &mut from.relation else {
        return None;
    };
    let text = subquery.to_string();
    if !(text.contains("generate_subscripts(") && text.contains("pg_catalog.pg_constraint")) {
        return None;
    }
    let attr = select(subquery)?;
    let mut contype = None;
    let mut kept = Vec::new();
    placeholders_in_query(subquery, &mut kept);
    let _ = visit_expressions(subquery.as_ref(), |e| {
        if let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = e
            && left.to_string().ends_with(".contype")
        {
            contype = Some(right.to_string());
        }
        ControlFlow::<()>::Continue(())
    });
    let mut conditions = vec![format!("'p' = {}", contype?)];
    if let Some(w) = &attr.selection {
        conditions.push(w.to_string().replace("con.conrelid", "ct.oid"));
    }
    if !kept.is_empty() {
        let keep: Vec<String> = kept.iter().map(|p| format!("{p} IS NULL")).collect();
        conditions.push(format!("({} OR TRUE)", keep.join(" OR ")));
    }
    let sql = format!(
        "SELECT ct.oid AS conrelid, k.pk_name AS conname, CAST(NULL AS TEXT) AS description, \
         k.key_seq AS ord, k.key_len AS indnkeyatts, false AS indnullsnotdistinct, \
         k.column_name AS attname \
         FROM {f}() AS k \
         JOIN pg_catalog.pg_class AS ct ON ct.relname = k.table_name \
         JOIN pg_catalog.pg_namespace AS n ON ct.relnamespace = n.oid AND n.nspname = 'public' \
         WHERE {w}",
        f = crate::keys::FUNCTION,
        w = conditions.join(" AND "),
    );
    let Ok(mut parsed) = Parser::parse_sql(&PostgreSqlDialect {}, &sql) else {
        return None;
    };
    let Some(Statement::Query(new)) = parsed.pop() else {
        return None;
    };
    *subquery = new;
    Some(q.to_string())
}

/// The `$n` placeholders of a query.
fn placeholders_in_query(q: &Query, into: &mut Vec<String>) {
    let _ = visit_expressions(q, |e| {
        if let Expr::Value(ValueWithSpan {
            value: Value::Placeholder(p),
            ..
        }) = e
            && !into.contains(p)
        {
            into.push(p.clone());
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As pgjdbc 42.5 sends it.
    const PGJDBC_PK: &str = "SELECT        result.TABLE_CAT,        result.TABLE_SCHEM,        result.TABLE_NAME,        result.COLUMN_NAME,        result.KEY_SEQ,        result.PK_NAME FROM      (SELECT NULL AS TABLE_CAT, n.nspname AS TABLE_SCHEM,   ct.relname AS TABLE_NAME, a.attname AS COLUMN_NAME,   (information_schema._pg_expandarray(i.indkey)).n AS KEY_SEQ, ci.relname AS PK_NAME,   information_schema._pg_expandarray(i.indkey) AS KEYS, a.attnum AS A_ATTNUM FROM pg_catalog.pg_class ct   JOIN pg_catalog.pg_attribute a ON (ct.oid = a.attrelid)   JOIN pg_catalog.pg_namespace n ON (ct.relnamespace = n.oid)   JOIN pg_catalog.pg_index i ON ( a.attrelid = i.indrelid)   JOIN pg_catalog.pg_class ci ON (ci.oid = i.indexrelid) WHERE true  AND n.nspname = 'public' AND ct.relname = 'sluice_jdbc_k2' AND i.indisprimary  ) result where  result.A_ATTNUM = (result.KEYS).x  ORDER BY result.table_name, result.pk_name, result.key_seq";

    #[test]
    fn pgjdbc_primary_keys_keep_the_table_condition() {
        let sql = rewrite(PGJDBC_PK).expect("rewritten");
        assert!(sql.contains("sluice_primary_keys()"), "{sql}");
        assert!(sql.contains("ct.relname = 'sluice_jdbc_k2'"), "{sql}");
        assert!(!sql.contains("indisprimary"), "{sql}");
        assert_eq!(rewrite("select 1"), None);
    }
    /// SQLAlchemy 2.0's column reflection (shortened: fewer json_build_object pairs).
    const SQLALCHEMY_COLUMNS: &str = r#"SELECT pg_catalog.pg_attribute.attname AS name, pg_catalog.format_type(pg_catalog.pg_attribute.atttypid, pg_catalog.pg_attribute.atttypmod) AS format_type, CASE WHEN pg_catalog.pg_attribute.atthasdef THEN (SELECT pg_catalog.pg_get_expr(pg_catalog.pg_attrdef.adbin, pg_catalog.pg_attrdef.adrelid) AS pg_get_expr_1 FROM pg_catalog.pg_attrdef WHERE pg_catalog.pg_attribute.atthasdef AND pg_catalog.pg_attrdef.adrelid = pg_catalog.pg_attribute.attrelid AND pg_catalog.pg_attrdef.adnum = pg_catalog.pg_attribute.attnum) ELSE NULL END AS "default", pg_catalog.pg_attribute.attnotnull AS not_null, pg_catalog.pg_class.relname AS table_name, pg_catalog.pg_description.description AS comment, pg_catalog.pg_attribute.attgenerated AS generated, CASE WHEN (pg_catalog.pg_attribute.attidentity != $1::VARCHAR) THEN (SELECT json_build_object($2::VARCHAR, pg_catalog.pg_attribute.attidentity = $3::VARCHAR, $4::VARCHAR, pg_catalog.pg_sequence.seqstart) AS json_build_object_1 FROM pg_catalog.pg_sequence WHERE pg_catalog.pg_attribute.attidentity != $5::VARCHAR AND pg_catalog.pg_sequence.seqrelid = CAST(CAST(pg_catalog.pg_get_serial_sequence(CAST(CAST(pg_catalog.pg_attribute.attrelid AS REGCLASS) AS TEXT), pg_catalog.pg_attribute.attname) AS REGCLASS) AS OID)) ELSE NULL END AS identity_options, CASE WHEN (pg_catalog.pg_attribute.attcollation != $6::INTEGER AND (SELECT pg_catalog.pg_type.typcollation FROM pg_catalog.pg_type WHERE pg_catalog.pg_type.oid = pg_catalog.pg_attribute.atttypid) != pg_catalog.pg_attribute.attcollation) THEN (SELECT json_build_object($7::VARCHAR, pg_catalog.pg_collation.collname) AS json_build_object_9 FROM pg_catalog.pg_collation WHERE pg_catalog.pg_collation.oid = pg_catalog.pg_attribute.attcollation) ELSE NULL END AS collation FROM pg_catalog.pg_class LEFT OUTER JOIN pg_catalog.pg_attribute ON pg_catalog.pg_class.oid = pg_catalog.pg_attribute.attrelid AND pg_catalog.pg_attribute.attnum > $8::SMALLINT AND NOT pg_catalog.pg_attribute.attisdropped LEFT OUTER JOIN pg_catalog.pg_description ON pg_catalog.pg_description.objoid = pg_catalog.pg_attribute.attrelid AND pg_catalog.pg_description.objsubid = pg_catalog.pg_attribute.attnum JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace WHERE pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != $9::VARCHAR AND pg_catalog.pg_class.relname IN ($10::VARCHAR) ORDER BY pg_catalog.pg_class.relname, pg_catalog.pg_attribute.attnum"#;

    /// SQLAlchemy 2.0's constraint reflection.
    const SQLALCHEMY_PK: &str = r#"SELECT attr.conrelid, array_agg(CAST(attr.attname AS TEXT) ORDER BY attr.ord) AS cols, attr.conname, min(attr.description) AS description, min(attr.indnkeyatts) AS indnkeyatts, bool_and(attr.indnullsnotdistinct) AS indnullsnotdistinct FROM (SELECT con.conrelid AS conrelid, con.conname AS conname, con.description AS description, con.ord AS ord, con.indnkeyatts AS indnkeyatts, con.indnullsnotdistinct AS indnullsnotdistinct, pg_catalog.pg_attribute.attname AS attname FROM pg_catalog.pg_attribute JOIN (SELECT pg_catalog.pg_constraint.conrelid AS conrelid, pg_catalog.pg_constraint.conname AS conname, unnest(pg_catalog.pg_index.indkey) AS attnum, generate_subscripts(pg_catalog.pg_index.indkey, $1::INTEGER) AS ord, pg_catalog.pg_index.indnkeyatts AS indnkeyatts, pg_catalog.pg_index.indnullsnotdistinct AS indnullsnotdistinct, pg_catalog.pg_description.description AS description FROM pg_catalog.pg_constraint JOIN pg_catalog.pg_index ON pg_catalog.pg_constraint.conindid = pg_catalog.pg_index.indexrelid LEFT OUTER JOIN pg_catalog.pg_description ON pg_catalog.pg_description.objoid = pg_catalog.pg_constraint.oid AND pg_catalog.pg_description.classoid = CAST($2 AS REGCLASS) WHERE pg_catalog.pg_constraint.contype = $3::VARCHAR AND pg_catalog.pg_constraint.conrelid IN ($4)) AS con ON pg_catalog.pg_attribute.attnum = con.attnum AND pg_catalog.pg_attribute.attrelid = con.conrelid WHERE con.conrelid IN ($4)) AS attr GROUP BY attr.conrelid, attr.conname ORDER BY attr.conrelid, attr.conname"#;

    fn placeholders_of(sql: &str) -> Vec<String> {
        let mut v: Vec<String> = sql
            .split('$')
            .skip(1)
            .map(|p| p.chars().take_while(char::is_ascii_digit).collect())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn sqlalchemy_columns_lose_their_subqueries_not_their_parameters() {
        let sql = rewrite(SQLALCHEMY_COLUMNS).expect("rewritten");
        assert!(!sql.contains("pg_attrdef"), "{sql}");
        assert!(!sql.contains("pg_sequence"), "{sql}");
        assert!(!sql.contains("pg_collation"), "{sql}");
        assert_eq!(placeholders_of(&sql), placeholders_of(SQLALCHEMY_COLUMNS));
    }

    #[test]
    fn sqlalchemy_constraints_read_the_feeds_keys() {
        let sql = rewrite(SQLALCHEMY_PK).expect("rewritten");
        assert!(sql.contains("sluice_primary_keys()"), "{sql}");
        assert!(!sql.contains("unnest"), "{sql}");
        assert!(sql.contains("'p' = $3::VARCHAR"), "{sql}");
        assert!(sql.contains("ct.oid IN ($4)"), "{sql}");
        assert_eq!(placeholders_of(&sql), placeholders_of(SQLALCHEMY_PK));
    }

    #[test]
    fn function_columns_compare_names() {
        let sql = rewrite("SELECT typinput='pg_catalog.array_in'::regproc as is_array FROM pg_catalog.pg_type t LEFT JOIN pg_proc AS proc ON proc.oid = t.typreceive").unwrap();
        assert!(sql.contains("typinput = 'array_in'"), "{sql}");
        assert!(sql.contains("proc.proname = t.typreceive"), "{sql}");
        let sql = rewrite("SELECT (SELECT rngtypid FROM pg_range WHERE rngmultitypid = t.oid) AS r, NULL AS c FROM pg_type t").unwrap();
        assert!(sql.contains("(SELECT max(rngtypid) FROM pg_range"), "{sql}");
        assert!(sql.contains("CAST(NULL AS TEXT) AS c"), "{sql}");
    }
}
