import sluice


@sluice.feed
def bench_extract_py():
    """The extract written in Python in Sluice: rows fetched by the worker (sluice.connect)."""
    conn = sluice.connect("benchpg")
    cur = conn.cursor()
    cur.execute("select * from orders")
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]
