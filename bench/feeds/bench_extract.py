import sluice


@sluice.feed
def bench_extract():
    """The extract benchmark: returned unchanged, so Sluice runs it natively (passthrough)."""
    return sluice.sql("benchpg", "select * from orders")
