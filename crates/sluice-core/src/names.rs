//! Names of workspaces, feeds and data sources. They appear in URLs, in OData entity
//! sets and as PostgreSQL table names, so they are restricted to what all of those accept
//! unquoted: a lowercase letter, then lowercase letters, digits and `_`, at most 63 bytes.

use crate::{Code, Error};

pub fn validate(kind: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            Code::InvalidName,
            format!(
                "{kind} name '{name}' is not valid: use a lowercase letter followed by lowercase letters, digits or '_' (at most 63)"
            ),
        )
        .with("name", name))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn accepts_identifiers_and_rejects_the_rest() {
        for ok in ["demo", "sales_by_region", "a1"] {
            super::validate("feed", ok).unwrap();
        }
        for bad in ["", "1abc", "Sales", "a-b", "a b", &"x".repeat(64)] {
            assert!(super::validate("feed", bad).is_err(), "{bad}");
        }
    }
}
