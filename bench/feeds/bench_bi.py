import sluice


@sluice.feed
def bench_bi(size: str = "1m"):
    """The BI-protocol benchmark: 1M rows (or the 100k table with size=100k), passthrough."""
    table = "orders_1m" if size == "1m" else "orders"
    return sluice.sql("benchpg", f"select * from {table}")
