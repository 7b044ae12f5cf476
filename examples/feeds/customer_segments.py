import sluice


@sluice.feed
def customer_segments(region: str = "EU", min_orders: int = 1):
    """Customers per segment with their order counts, combined in plain Python."""
    counts = {}
    for row in sluice.sql(
        "warehouse",
        "select c.segment, c.id, count(*) as orders from sales s "
        "join customers c on c.id = s.customer_id where s.region = :region "
        "group by c.segment, c.id",
        region=region,
    ):
        if row["orders"] >= min_orders:
            seg = counts.setdefault(row["segment"], {"segment": row["segment"], "customers": 0, "orders": 0})
            seg["customers"] += 1
            seg["orders"] += row["orders"]
    return sorted(counts.values(), key=lambda r: r["segment"])
