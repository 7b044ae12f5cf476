import sluice


@sluice.feed
def bench_hello():
    """The hello benchmark: a plain Python feed, no cache, a worker call per request."""
    name = "world"
    return [{"greeting": f"Hello, {name}!", "length": len(name)}]
