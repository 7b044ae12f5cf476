//! `GET /api/v1/workspaces/{ws}/feeds/{feed}/metrics?window=1h`: a feed's calls, errors and
//! latency percentiles per minute, for the IDE's Observe panel. Every call is counted: the
//! gateways count them in memory and write per-minute aggregates, which the store adds up
//! over replicas (`sluice_store::Traffic`); this module flushes this server's counts first,
//! so the current minute includes its calls up to now, and turns the asked window into
//! whole clock minutes ending with the current one.
//!
//! Viewers may read it: counts and timings carry no parameters, output or code (those stay in
//! the editors-only `logs`).

use crate::{Caller, handlers::ApiResult};
use axum::{
    Json,
    extract::{Path, Query, State},
};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_core::{Code, Error};
use sluice_gateway::Gateway;
use sluice_store::Traffic;

/// The window when none is asked for.
const DEFAULT_WINDOW: &str = "1h";

/// The longest window: as many one-minute buckets as the store answers (a day).
const MAX_WINDOW_MINUTES: i64 = sluice_store::MAX_TRAFFIC_BUCKETS;

#[derive(Deserialize)]
pub struct MetricsQuery {
    window: Option<String>,
}

pub async fn feed(
    State(gw): State<Gateway>,
    Caller(p): Caller,
    Path((ws, feed)): Path<(String, String)>,
    Query(q): Query<MetricsQuery>,
) -> ApiResult<Json<Value>> {
    p.authorize(&ws, false)?;
    let window = q.window.as_deref().unwrap_or(DEFAULT_WINDOW);
    let minutes = parse_window(window)?;
    // Without it the numbers are at most a flush interval old, which is still worth
    // showing: a failed flush is retried by the periodic one.
    if let Err(e) = gw.flush_traffic().await {
        tracing::warn!("could not write this server's feed traffic before reading it: {e}");
    }
    let (from, to) = minute_window(Utc::now(), minutes);
    let t = match gw
        .store()
        .feed_traffic(&ws, &feed, from, to, TimeDelta::minutes(1))
        .await
    {
        // A feed only the cluster has, not called yet: the store records it on its first.
        Err(e) if e.code == Code::FeedNotFound && gw.cluster_route(&ws, &feed).is_some() => {
            Traffic::none(from, to, TimeDelta::minutes(1))?
        }
        other => other?,
    };
    let mut out = json!(t);
    out["workspace"] = json!(ws);
    out["feed"] = json!(feed);
    out["window"] = json!(window);
    Ok(Json(out))
}

/// `15m`, `90m`, `1h`, `24h` → minutes, from one minute up to a day.
fn parse_window(s: &str) -> Result<i64, Error> {
    let bad = || {
        Error::new(
            Code::InvalidParameter,
            format!(
                "window '{s}' is not a duration in whole minutes or hours up to 24h: use e.g. 15m or 1h"
            ),
        )
        .with("parameter", "window")
    };
    let (digits, per) = if let Some(d) = s.strip_suffix('m') {
        (d, 1)
    } else if let Some(d) = s.strip_suffix('h') {
        (d, 60)
    } else {
        return Err(bad());
    };
    // `parse` alone would take a sign; a window is written with digits only.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let minutes = digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(per))
        .filter(|m| (1..=MAX_WINDOW_MINUTES).contains(m))
        .ok_or_else(bad)?;
    Ok(minutes)
}

/// `minutes` whole clock minutes ending with the one `now` is in, so each bucket is a
/// minute a person would name ("10:41") and the current one fills up as calls come in.
fn minute_window(now: DateTime<Utc>, minutes: i64) -> (DateTime<Utc>, DateTime<Utc>) {
    let minute = TimeDelta::minutes(1);
    // Truncating a current timestamp to a minute cannot overflow; `now` stands in for it
    // only to keep this total.
    let start_of_this = now.duration_trunc(minute).unwrap_or(now);
    let to = start_of_this + minute;
    (to - TimeDelta::minutes(minutes), to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_whole_minutes_up_to_a_day() {
        for (s, m) in [
            ("15m", 15),
            ("1h", 60),
            ("90m", 90),
            ("24h", 1440),
            ("1m", 1),
        ] {
            assert_eq!(parse_window(s).unwrap(), m, "{s}");
        }
        for s in [
            "",
            "m",
            "0m",
            "25h",
            "1441m",
            "-5m",
            "+5m",
            "1.5h",
            "10",
            "10s",
            "1d",
            "99999999999999999999h",
        ] {
            let e = parse_window(s).unwrap_err();
            assert_eq!(e.code, Code::InvalidParameter, "{s}");
            assert_eq!(e.extra["parameter"], "window");
        }
    }

    #[test]
    fn the_window_ends_with_the_current_minute() {
        let now = DateTime::parse_from_rfc3339("2025-03-04T10:41:27.5Z")
            .unwrap()
            .to_utc();
        let (from, to) = minute_window(now, 15);
        assert_eq!(to.to_rfc3339(), "2025-03-04T10:42:00+00:00");
        assert_eq!(from.to_rfc3339(), "2025-03-04T10:27:00+00:00");
    }
}
