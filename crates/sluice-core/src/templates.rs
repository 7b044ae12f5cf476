//! New-feed templates: what `sluice init` writes and what the IDE's "New feed" offers, from
//! one list so the two never differ. A template is a complete feed module with `{feed}`
//! where the feed's name goes.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Template {
    /// Stable id, e.g. `top_products`.
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// The module, with `{feed}` for the feed (and function) name.
    pub source: &'static str,
}

impl Template {
    /// The module for a feed called `feed` (a valid feed name, so a Python identifier).
    pub fn render(&self, feed: &str) -> String {
        self.source.replace("{feed}", feed)
    }
}

/// Every template; the first is the default (`sluice init NAME`). It runs as-is against
/// the demo `warehouse` source, so an analyst sees rows within a minute.
pub const TEMPLATES: &[Template] = &[
    Template {
        name: "top_products",
        title: "Top products (SQL on the warehouse)",
        description: "A sluice.sql query with two parameters on the demo warehouse: runs as-is after `sluice up`.",
        source: TEMPLATE,
    },
    Template {
        name: "python",
        title: "Rows from Python (no data source)",
        description: "A list of dicts built in plain Python, with a date parameter: replace the body with your own logic or an HTTP call.",
        source: PYTHON_TEMPLATE,
    },
];

/// The template named `name`, or an error listing the names there are.
pub fn find(name: &str) -> Result<&'static Template, String> {
    TEMPLATES.iter().find(|t| t.name == name).ok_or_else(|| {
        let names: Vec<&str> = TEMPLATES.iter().map(|t| t.name).collect();
        format!("no template '{name}': there are {}", names.join(", "))
    })
}

const PYTHON_TEMPLATE: &str = r#"# /// script
# requires-python = ">=3.10"
# dependencies = []
# ///
"""{feed}: a Sluice feed module.

Each function decorated with @sluice.feed becomes a live feed named after it.
Try it with `sluice run {feed}.py -p days=3`, publish it with `sluice deploy {feed}.py`.
"""
from datetime import date, timedelta

import sluice


@sluice.feed
def {feed}(days: int = 7, start: date = date(2024, 1, 1)):
    """One row per day, computed in Python: replace the body with your own logic."""
    rows = []
    for i in range(days):
        day = start + timedelta(days=i)
        rows.append({"day": day, "weekday": day.strftime("%A"), "value": i * i})
    return rows
"#;

// `round()` is left out on purpose: `amount` is `real`, and PostgreSQL has no
// round(real, int), so the same query keeps working if the warehouse moves there.
const TEMPLATE: &str = r#"# /// script
# requires-python = ">=3.10"
# dependencies = []
# ///
"""{feed}: a Sluice feed module.

Each function decorated with @sluice.feed becomes a live feed named after it.
Try it with `sluice run {feed}.py -p region=APAC`, publish it with `sluice deploy {feed}.py`.
"""
import sluice


@sluice.feed(cache="5m")
def {feed}(limit: int = 10, region: str = "EU"):
    """Top products by revenue in one region, best first."""
    return sluice.sql(
        "warehouse",
        """
        select p.name as product,
               p.category,
               sum(s.units) as units,
               sum(s.amount) as revenue
        from sales s
        join products p on p.id = s.product_id
        where s.region = :region
        group by p.id, p.name, p.category
        order by revenue desc
        limit :limit
        """,
        region=region,
        limit=limit,
    )
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_names_the_templates_there_are() {
        assert_eq!(find("python").unwrap().name, "python");
        let e = find("nope").unwrap_err();
        assert!(e.contains("top_products, python"), "{e}");
    }

    #[test]
    fn templates_have_unique_names_and_a_feed_placeholder() {
        let mut names: Vec<_> = TEMPLATES.iter().map(|t| t.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), TEMPLATES.len());
        for t in TEMPLATES {
            assert!(t.source.contains("def {feed}("), "{}", t.name);
            assert!(!t.render("x").contains("{feed}"));
        }
    }
}
