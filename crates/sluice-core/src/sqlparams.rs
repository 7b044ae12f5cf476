//! Named SQL parameters. Feeds write `:name` (the style analysts know from SQLAlchemy);
//! databases want positions. [`rewrite`] turns one into the other without ever putting a
//! value into the SQL text: values are always bound. It skips string literals, quoted
//! identifiers, comments and PostgreSQL `::type` casts.

use crate::{Code, Error};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `$1, $2, …` (PostgreSQL; SQLite accepts it too)
    Dollar,
    /// `?1, ?2, …` (SQLite)
    Question,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub sql: String,
    /// Parameter names in positional order; a name used twice binds once.
    pub names: Vec<String>,
}

pub fn rewrite(sql: &str, style: Placeholder) -> Result<Rewritten, Error> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() {
                    if b[i] == q {
                        if i + 1 < b.len() && b[i + 1] == q {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b':' if b.get(i + 1) == Some(&b':') => i += 2,
            b':' if b
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') =>
            {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                let name = &sql[start..j];
                let pos = match names.iter().position(|n| n == name) {
                    Some(p) => p + 1,
                    None => {
                        names.push(name.to_string());
                        names.len()
                    }
                };
                out.push_str(&sql[last..i]);
                out.push(if style == Placeholder::Dollar {
                    '$'
                } else {
                    '?'
                });
                out.push_str(&pos.to_string());
                i = j;
                last = j;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[last.min(sql.len())..]);
    Ok(Rewritten { sql: out, names })
}

/// Check that every name the query uses was given, and every given name is used.
pub fn check_bound(rw: &Rewritten, given: &[&str]) -> Result<(), Error> {
    for n in &rw.names {
        if !given.contains(&n.as_str()) {
            return Err(Error::new(
                Code::BadRequest,
                format!("the SQL uses :{n} but no value was passed for it: add {n}=... to sluice.sql(...)"),
            )
            .with("parameter", n.as_str()));
        }
    }
    Ok(())
}

/// The statement's first word (letters, digits, `_`, `$`), after blanks, comments and
/// opening parentheses: enough to tell a `COPY` or a `SELECT` apart without a parser.
pub fn first_word(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_names_to_positions() {
        let r = rewrite(
            "select * from t where a = :a and b >= :since and c = :a",
            Placeholder::Dollar,
        )
        .unwrap();
        assert_eq!(r.sql, "select * from t where a = $1 and b >= $2 and c = $1");
        assert_eq!(r.names, vec!["a", "since"]);
        let r = rewrite("select :x", Placeholder::Question).unwrap();
        assert_eq!(r.sql, "select ?1");
    }

    #[test]
    fn leaves_literals_comments_and_casts_alone() {
        let sql = "select ':no', \"x:y\", a::text -- :nope\n from t /* :nor */ where b = :yes and c = 'it''s :not'";
        let r = rewrite(sql, Placeholder::Dollar).unwrap();
        assert_eq!(r.names, vec!["yes"]);
        assert_eq!(r.sql, sql.replace(":yes", "$1"));
    }

    #[test]
    fn unbound_names_are_reported() {
        let r = rewrite("select :a, :b", Placeholder::Dollar).unwrap();
        let e = check_bound(&r, &["a"]).unwrap_err();
        assert!(e.message.contains(":b"));
        check_bound(&r, &["a", "b", "c"]).unwrap();
    }

    #[test]
    fn first_word_skips_blanks_comments_and_parentheses() {
        assert_eq!(first_word("  -- note\n /* a */ (( select 1"), "select");
        assert_eq!(first_word("COPY feed TO STDOUT"), "COPY");
        assert_eq!(first_word("copy_of_feed"), "copy_of_feed");
        assert_eq!(first_word("/* never closed"), "");
        assert_eq!(first_word(""), "");
    }
}
