import sluice


@sluice.feed(cache="5m")
def bench_hello_cached():
    """The same hello with Sluice's result cache: repeat calls never reach Python."""
    name = "world"
    return [{"greeting": f"Hello, {name}!", "length": len(name)}]
