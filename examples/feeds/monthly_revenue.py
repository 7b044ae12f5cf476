# /// script
# dependencies = ["pandas>=2"]
# ///
from datetime import date

import pandas as pd
import sluice


@sluice.feed
def monthly_revenue(since: date = date(2023, 1, 1), categories: list[str] = []):
    """Revenue per month and product category, pivoted with pandas."""
    df = sluice.sql(
        "warehouse",
        "select s.day, p.category, s.amount from sales s join products p on p.id = s.product_id "
        "where s.day >= :since",
        since=since,
    ).df()
    if categories:
        df = df[df["category"].isin(categories)]
    df["month"] = pd.to_datetime(df["day"]).dt.strftime("%Y-%m")
    out = df.groupby(["month", "category"], as_index=False)["amount"].sum()
    out["amount"] = out["amount"].round(2)
    return out
