//! `LIKE ... ESCAPE 'c'` for any `c`: DataFusion only runs the backslash, and SQLAlchemy's
//! inspector writes `nspname NOT LIKE 'pg/_%' ESCAPE '/'`. The pattern is rewritten to
//! use the backslash: backslashes doubled, then `c` turned into a backslash (a doubled
//! `cc` for a literal `c` is not handled: no client we know sends one).

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::functions::expr_fn::replace;
use datafusion::logical_expr::{Expr, LogicalPlan, cast, expr::Like, lit};
use datafusion::optimizer::AnalyzerRule;

#[derive(Debug)]
pub struct LikeEscape;

impl AnalyzerRule for LikeEscape {
    fn analyze(
        &self,
        plan: LogicalPlan,
        _config: &ConfigOptions,
    ) -> datafusion::error::Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|p| {
            p.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::Like(l) if l.escape_char.is_some_and(|c| c != '\\') => {
                        let c = l.escape_char.unwrap_or('\\');
                        let pattern = cast(*l.pattern, DataType::Utf8);
                        let pattern = replace(
                            replace(pattern, lit("\\"), lit("\\\\")),
                            lit(c.to_string()),
                            lit("\\"),
                        );
                        Ok(Transformed::yes(Expr::Like(Like {
                            negated: l.negated,
                            expr: l.expr,
                            pattern: Box::new(pattern),
                            escape_char: Some('\\'),
                            case_insensitive: l.case_insensitive,
                        })))
                    }
                    other => Ok(Transformed::no(other)),
                })
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "sluice_like_escape"
    }
}
