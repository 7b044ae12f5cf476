//! Feed signatures and request parameters.
//!
//! A worker discovers a feed's signature from the Python function (`str int float bool
//! date datetime list[str]`, defaults, docstring) and reports it as JSON in the shape of
//! [`FeedSignature`]. The gateway checks every request against it *before* any user code
//! runs: unknown names, wrong types and missing required values are 400s that name the
//! parameter, the value and the expected type.

use crate::{Code, Error};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamType {
    #[serde(rename = "str")]
    Str,
    #[serde(rename = "int")]
    Int,
    #[serde(rename = "float")]
    Float,
    #[serde(rename = "bool")]
    Bool,
    #[serde(rename = "date")]
    Date,
    #[serde(rename = "datetime")]
    DateTime,
    #[serde(rename = "list[str]")]
    ListStr,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Str => "str",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Bool => "bool",
            ParamType::Date => "date",
            ParamType::DateTime => "datetime",
            ParamType::ListStr => "list[str]",
        }
    }

    /// What a user should type, for error messages.
    pub fn expected(self) -> &'static str {
        match self {
            ParamType::Str => "a string",
            ParamType::Int => "an integer (e.g. 42)",
            ParamType::Float => "a number (e.g. 3.5)",
            ParamType::Bool => "a boolean (true/false, 1/0, yes/no)",
            ParamType::Date => "a date as YYYY-MM-DD",
            ParamType::DateTime => "a date-time as YYYY-MM-DDTHH:MM:SS with an optional offset",
            ParamType::ListStr => "a comma-separated list of strings, or the parameter repeated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// The default as JSON (dates as ISO strings); `None` (or JSON null) with
    /// `required = false` means the default is Python's `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedSignature {
    pub name: String,
    #[serde(default)]
    pub doc: String,
    #[serde(default)]
    pub params: Vec<ParamSpec>,
    /// Cache duration as written in `@sluice.feed(cache="5m")`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// Declared key columns (`@sluice.feed(key=["id"])`), used by OData.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Null,
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Date(NaiveDate),
    /// Naive date-times are kept naive; an explicit offset is kept.
    DateTime(NaiveDateTime, Option<FixedOffset>),
    ListStr(Vec<String>),
}

impl ParamValue {
    /// The JSON form sent to workers and echoed in APIs: dates as ISO 8601 strings.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            ParamValue::Null => J::Null,
            ParamValue::Str(s) => J::String(s.clone()),
            ParamValue::Int(i) => J::from(*i),
            ParamValue::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            ParamValue::Bool(b) => J::Bool(*b),
            ParamValue::Date(d) => J::String(d.format("%Y-%m-%d").to_string()),
            ParamValue::DateTime(dt, None) => {
                J::String(dt.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
            }
            ParamValue::DateTime(dt, Some(off)) => {
                let aware = DateTime::<FixedOffset>::from_naive_utc_and_offset(*dt - *off, *off);
                J::String(aware.to_rfc3339())
            }
            ParamValue::ListStr(v) => J::Array(v.iter().cloned().map(J::String).collect()),
        }
    }
}

/// Coerced parameters, by name, including defaults.
pub type Params = BTreeMap<String, ParamValue>;

fn invalid(spec: &ParamSpec, value: &str) -> Error {
    Error::new(
        Code::InvalidParameter,
        format!(
            "parameter '{}' has value '{}': expected {}",
            spec.name,
            value,
            spec.ty.expected()
        ),
    )
    .with("parameter", spec.name.as_str())
    .with("value", value)
    .with("expected", spec.ty.as_str())
}

pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

pub fn parse_datetime(s: &str) -> Option<(NaiveDateTime, Option<FixedOffset>)> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some((dt.naive_local(), Some(*dt.offset())));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some((dt, None));
        }
    }
    parse_date(s)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| (dt, None))
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "on" | "t" => Some(true),
        "false" | "0" | "no" | "n" | "off" | "f" => Some(false),
        _ => None,
    }
}

/// Parse one textual value (from a query string) as the given type.
pub fn parse_value(spec: &ParamSpec, values: &[&str]) -> Result<ParamValue, Error> {
    let single = || -> Result<&str, Error> {
        match values {
            [v] => Ok(*v),
            _ => Err(Error::new(
                Code::InvalidParameter,
                format!(
                    "parameter '{}' was given {} times: expected one {}",
                    spec.name,
                    values.len(),
                    spec.ty.expected()
                ),
            )
            .with("parameter", spec.name.as_str())
            .with("expected", spec.ty.as_str())),
        }
    };
    Ok(match spec.ty {
        ParamType::Str => ParamValue::Str(single()?.to_string()),
        ParamType::Int => {
            let v = single()?;
            ParamValue::Int(v.trim().parse().map_err(|_| invalid(spec, v))?)
        }
        ParamType::Float => {
            let v = single()?;
            let f: f64 = v.trim().parse().map_err(|_| invalid(spec, v))?;
            if !f.is_finite() {
                return Err(invalid(spec, v));
            }
            ParamValue::Float(f)
        }
        ParamType::Bool => {
            let v = single()?;
            ParamValue::Bool(parse_bool(v.trim()).ok_or_else(|| invalid(spec, v))?)
        }
        ParamType::Date => {
            let v = single()?;
            ParamValue::Date(parse_date(v.trim()).ok_or_else(|| invalid(spec, v))?)
        }
        ParamType::DateTime => {
            let v = single()?;
            let (dt, off) = parse_datetime(v.trim()).ok_or_else(|| invalid(spec, v))?;
            ParamValue::DateTime(dt, off)
        }
        ParamType::ListStr => ParamValue::ListStr(
            values
                .iter()
                .flat_map(|v| v.split(','))
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        ),
    })
}

/// Turn a default (JSON, as reported by the worker) into a typed value.
fn default_value(spec: &ParamSpec, v: &serde_json::Value) -> Result<ParamValue, Error> {
    use serde_json::Value as J;
    Ok(match (spec.ty, v) {
        (_, J::Null) => ParamValue::Null,
        (ParamType::ListStr, J::Array(items)) => ParamValue::ListStr(
            items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| i.to_string())
                })
                .collect(),
        ),
        (_, J::String(s)) => parse_value(spec, &[s.as_str()])?,
        (_, other) => parse_value(spec, &[other.to_string().as_str()])?,
    })
}

impl FeedSignature {
    /// Check and coerce request parameters against this signature. `raw` is the query
    /// string in order (a name may repeat for `list[str]`). Names in `reserved` (like
    /// `format` or `api_key`) belong to the gateway and are skipped.
    pub fn coerce(&self, raw: &[(String, String)], reserved: &[&str]) -> Result<Params, Error> {
        let mut grouped: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (k, v) in raw {
            if reserved.contains(&k.as_str()) || k.starts_with('$') {
                continue;
            }
            let Some(spec) = self.params.iter().find(|p| p.name == *k) else {
                let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                let hint = if known.is_empty() {
                    "this feed takes no parameters".to_string()
                } else {
                    format!("known parameters: {}", known.join(", "))
                };
                return Err(Error::new(
                    Code::UnknownParameter,
                    format!("unknown parameter '{k}' for feed '{}': {hint}", self.name),
                )
                .with("parameter", k.as_str())
                .with("known", known));
            };
            grouped
                .entry(spec.name.as_str())
                .or_default()
                .push(v.as_str());
        }
        let mut out = Params::new();
        for spec in &self.params {
            let value = match grouped.get(spec.name.as_str()) {
                Some(values) => parse_value(spec, values)?,
                None if !spec.required => match &spec.default {
                    Some(d) => default_value(spec, d)?,
                    None => ParamValue::Null,
                },
                None => {
                    return Err(Error::new(
                        Code::MissingParameter,
                        format!(
                            "parameter '{}' is required: expected {}",
                            spec.name,
                            spec.ty.expected()
                        ),
                    )
                    .with("parameter", spec.name.as_str())
                    .with("expected", spec.ty.as_str()));
                }
            };
            out.insert(spec.name.clone(), value);
        }
        Ok(out)
    }
}

pub fn params_to_json(p: &Params) -> serde_json::Value {
    serde_json::Value::Object(p.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig() -> FeedSignature {
        serde_json::from_value(serde_json::json!({
            "name": "sales",
            "doc": "Daily sales",
            "params": [
                {"name": "region", "type": "str", "default": "EU"},
                {"name": "limit", "type": "int", "default": 10},
                {"name": "ratio", "type": "float", "default": 0.5},
                {"name": "active", "type": "bool", "default": true},
                {"name": "since", "type": "date", "default": "2024-01-01"},
                {"name": "at", "type": "datetime", "default": null},
                {"name": "tags", "type": "list[str]", "default": []},
                {"name": "needed", "type": "int", "required": true}
            ]
        }))
        .unwrap()
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_and_values_coerce() {
        let p = sig()
            .coerce(
                &q(&[
                    ("needed", "3"),
                    ("tags", "a,b"),
                    ("tags", "c"),
                    ("format", "csv"),
                ]),
                &["format"],
            )
            .unwrap();
        assert_eq!(p["region"], ParamValue::Str("EU".into()));
        assert_eq!(p["limit"], ParamValue::Int(10));
        assert_eq!(p["needed"], ParamValue::Int(3));
        assert_eq!(p["active"], ParamValue::Bool(true));
        assert_eq!(
            p["since"],
            ParamValue::Date(NaiveDate::from_ymd_opt(2024, 1, 1).unwrap())
        );
        assert_eq!(p["at"], ParamValue::Null);
        assert_eq!(
            p["tags"],
            ParamValue::ListStr(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(params_to_json(&p)["since"], "2024-01-01");
    }

    #[test]
    fn bad_value_names_parameter_value_and_type() {
        let e = sig()
            .coerce(&q(&[("needed", "3"), ("limit", "ten")]), &[])
            .unwrap_err();
        assert_eq!(e.code, Code::InvalidParameter);
        assert!(
            e.message.contains("'limit'")
                && e.message.contains("'ten'")
                && e.message.contains("integer"),
            "{}",
            e.message
        );
        assert_eq!(e.extra["parameter"], "limit");
        assert_eq!(e.extra["expected"], "int");
    }

    #[test]
    fn unknown_and_missing_parameters_are_rejected() {
        let e = sig()
            .coerce(&q(&[("needed", "1"), ("regoin", "EU")]), &[])
            .unwrap_err();
        assert_eq!(e.code, Code::UnknownParameter);
        assert!(e.message.contains("regoin") && e.message.contains("region"));
        let e = sig().coerce(&q(&[]), &[]).unwrap_err();
        assert_eq!(e.code, Code::MissingParameter);
        assert_eq!(e.extra["parameter"], "needed");
    }

    #[test]
    fn dates_and_datetimes_parse_strictly() {
        let s = sig();
        assert!(
            s.coerce(&q(&[("needed", "1"), ("since", "2024-13-01")]), &[])
                .is_err()
        );
        let p = s
            .coerce(
                &q(&[("needed", "1"), ("at", "2024-03-01T10:00:00+02:00")]),
                &[],
            )
            .unwrap();
        assert_eq!(params_to_json(&p)["at"], "2024-03-01T10:00:00+02:00");
        let p = s
            .coerce(&q(&[("needed", "1"), ("at", "2024-03-01 10:00")]), &[])
            .unwrap();
        assert_eq!(params_to_json(&p)["at"], "2024-03-01T10:00:00");
        assert!(
            s.coerce(&q(&[("needed", "1"), ("ratio", "NaN")]), &[])
                .is_err()
        );
        assert!(
            s.coerce(&q(&[("needed", "1"), ("active", "maybe")]), &[])
                .is_err()
        );
        assert!(
            s.coerce(&q(&[("needed", "1"), ("limit", "1"), ("limit", "2")]), &[])
                .is_err()
        );
    }
}
