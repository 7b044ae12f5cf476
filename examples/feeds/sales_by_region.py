from datetime import date

import sluice


@sluice.feed(cache="5m")
def sales_by_region(region: str = "EU", since: date = date(2024, 1, 1)):
    """Daily sales for one region. Runs natively: the rows never pass through Python."""
    return sluice.sql(
        "warehouse",
        "select day, region, channel, sum(units) as units, round(sum(amount), 2) as amount "
        "from sales where region = :region and day >= :since "
        "group by day, region, channel order by day, channel",
        region=region,
        since=since,
    )
