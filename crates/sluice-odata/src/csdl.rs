//! The entity model of a feed (its OData shape) and the CSDL XML of `$metadata`.
//!
//! Arrow column names become OData property names (a SimpleIdentifier: letters, digits,
//! `_`, not starting with a digit); other characters are replaced by `_` and clashes get a
//! numeric suffix, so every feed has a valid model whatever its columns are called.
//! No annotations at all: Power Query rejects a whole service over one it cannot read.

use arrow_schema::{DataType, Schema, TimeUnit};
use std::collections::HashSet;
use std::fmt::Write;

/// The generated key of feeds that declare none: the 1-based position of the row in the
/// feed's result for the given parameters, before `$filter` and `$orderby`.
pub const ROW_KEY: &str = "_row";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// The OData property name.
    pub name: String,
    /// The column it comes from; `None` for the generated row key.
    pub column: Option<String>,
    pub edm: Edm,
    pub nullable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edm {
    String,
    Int64,
    Double,
    Decimal { precision: u8, scale: i8 },
    Boolean,
    Date,
    DateTimeOffset { precision: u8 },
    TimeOfDay { precision: u8 },
}

impl Edm {
    pub fn of(t: &DataType) -> Edm {
        match t {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => Edm::Int64,
            DataType::Float16 | DataType::Float32 | DataType::Float64 => Edm::Double,
            DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => Edm::Decimal {
                precision: *p,
                scale: *s,
            },
            DataType::Boolean => Edm::Boolean,
            DataType::Date32 | DataType::Date64 => Edm::Date,
            DataType::Timestamp(unit, _) => Edm::DateTimeOffset {
                precision: digits(unit),
            },
            DataType::Time32(unit) | DataType::Time64(unit) => Edm::TimeOfDay {
                precision: digits(unit),
            },
            DataType::Dictionary(_, v) => Edm::of(v),
            _ => Edm::String,
        }
    }

    fn attrs(self) -> String {
        match self {
            Edm::String => r#"Type="Edm.String""#.into(),
            Edm::Int64 => r#"Type="Edm.Int64""#.into(),
            Edm::Double => r#"Type="Edm.Double""#.into(),
            Edm::Decimal { precision, scale } => format!(
                r#"Type="Edm.Decimal" Precision="{precision}" Scale="{}""#,
                scale.max(0)
            ),
            Edm::Boolean => r#"Type="Edm.Boolean""#.into(),
            Edm::Date => r#"Type="Edm.Date""#.into(),
            Edm::DateTimeOffset { precision } => {
                format!(
                    r#"Type="Edm.DateTimeOffset" Precision="{}""#,
                    precision.min(12)
                )
            }
            Edm::TimeOfDay { precision } => {
                format!(r#"Type="Edm.TimeOfDay" Precision="{}""#, precision.min(12))
            }
        }
    }
}

fn digits(unit: &TimeUnit) -> u8 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

/// One feed as an entity set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitySet {
    pub name: String,
    pub properties: Vec<Property>,
    /// Names of the key properties.
    pub key: Vec<String>,
}

impl EntitySet {
    /// The model of a feed whose result has `schema`. `declared` is the feed's own key
    /// (`@sluice.feed(key=[...])`), used when every column it names exists; otherwise the
    /// generated [`ROW_KEY`] is added.
    pub fn new(name: &str, schema: &Schema, declared: &[String]) -> EntitySet {
        let mut used = HashSet::new();
        let mut properties: Vec<Property> = Vec::new();
        let declared_ok = !declared.is_empty()
            && declared
                .iter()
                .all(|k| schema.field_with_name(k).is_ok() && is_identifier(k));
        if !declared_ok {
            used.insert(ROW_KEY.to_string());
            properties.push(Property {
                name: ROW_KEY.into(),
                column: None,
                edm: Edm::Int64,
                nullable: false,
            });
        }
        for f in schema.fields() {
            let base = identifier(f.name());
            let mut name = base.clone();
            let mut n = 2;
            while used.contains(&name) {
                name = format!("{base}_{n}");
                n += 1;
            }
            used.insert(name.clone());
            let is_key = declared_ok && declared.contains(f.name());
            properties.push(Property {
                name,
                column: Some(f.name().clone()),
                edm: Edm::of(f.data_type()),
                nullable: !is_key,
            });
        }
        let key = if declared_ok {
            declared.to_vec()
        } else {
            vec![ROW_KEY.to_string()]
        };
        EntitySet {
            name: name.to_string(),
            properties,
            key,
        }
    }

    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name == name)
    }

    pub fn generated_key(&self) -> bool {
        self.key.len() == 1 && self.key[0] == ROW_KEY && self.properties[0].column.is_none()
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
        && s.len() <= 128
}

fn identifier(s: &str) -> String {
    if is_identifier(s) {
        return s.to_string();
    }
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    if !out
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
    {
        out.insert(0, '_');
    }
    out
}

pub fn namespace(ws: &str) -> String {
    format!("Sluice.{ws}")
}

/// `$metadata` for a workspace's readable feeds.
pub fn metadata(ws: &str, sets: &[EntitySet]) -> String {
    let ns = namespace(ws);
    let mut x = String::with_capacity(1024 + sets.len() * 512);
    x.push_str(r#"<?xml version="1.0" encoding="utf-8"?>"#);
    x.push_str(
        r#"<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">"#,
    );
    x.push_str("<edmx:DataServices>");
    let _ = write!(
        x,
        r#"<Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="{}">"#,
        escape(&ns)
    );
    for s in sets {
        let _ = write!(x, r#"<EntityType Name="{}"><Key>"#, escape(&s.name));
        for k in &s.key {
            let _ = write!(x, r#"<PropertyRef Name="{}"/>"#, escape(k));
        }
        x.push_str("</Key>");
        for p in &s.properties {
            let _ = write!(
                x,
                r#"<Property Name="{}" {}{}/>"#,
                escape(&p.name),
                p.edm.attrs(),
                if p.nullable {
                    ""
                } else {
                    r#" Nullable="false""#
                }
            );
        }
        x.push_str("</EntityType>");
    }
    x.push_str(r#"<EntityContainer Name="Container">"#);
    for s in sets {
        let _ = write!(
            x,
            r#"<EntitySet Name="{}" EntityType="{}.{}"/>"#,
            escape(&s.name),
            escape(&ns),
            escape(&s.name)
        );
    }
    x.push_str("</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>");
    x
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::Field;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("Total Sales", DataType::Decimal128(12, 2), true),
            Field::new("Total_Sales", DataType::Float64, true),
            Field::new("day", DataType::Date32, true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("1st", DataType::Utf8, true),
        ])
    }

    #[test]
    fn names_become_identifiers_without_clashes() {
        let s = EntitySet::new("sales", &schema(), &[]);
        let names: Vec<&str> = s.properties.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "_row",
                "id",
                "Total_Sales",
                "Total_Sales_2",
                "day",
                "at",
                "_1st"
            ]
        );
        assert_eq!(
            s.property("Total_Sales").unwrap().column.as_deref(),
            Some("Total Sales")
        );
        assert_eq!(s.key, ["_row"]);
        assert!(s.generated_key());
    }

    #[test]
    fn a_declared_key_replaces_the_row_number() {
        let s = EntitySet::new("sales", &schema(), &["id".into()]);
        assert_eq!(s.key, ["id"]);
        assert!(!s.generated_key());
        assert!(!s.property("id").unwrap().nullable);
        assert!(s.property("_row").is_none());
        // A declared key naming a column that is not there falls back to the row number.
        let s = EntitySet::new("sales", &schema(), &["nope".into()]);
        assert_eq!(s.key, ["_row"]);
    }

    #[test]
    fn types_map_to_edm() {
        let s = EntitySet::new("sales", &schema(), &[]);
        let xml = metadata("demo", &[s]);
        for needle in [
            r#"<Property Name="_row" Type="Edm.Int64" Nullable="false"/>"#,
            r#"<Property Name="Total_Sales" Type="Edm.Decimal" Precision="12" Scale="2"/>"#,
            r#"<Property Name="Total_Sales_2" Type="Edm.Double"/>"#,
            r#"<Property Name="day" Type="Edm.Date"/>"#,
            r#"<Property Name="at" Type="Edm.DateTimeOffset" Precision="6"/>"#,
            r#"<EntitySet Name="sales" EntityType="Sluice.demo.sales"/>"#,
        ] {
            assert!(xml.contains(needle), "{needle} not in {xml}");
        }
        assert!(!xml.contains("Annotation"));
    }
}
