import sluice


@sluice.feed
def hello(name: str = "world"):
    """A greeting: the smallest feed there is."""
    return [{"greeting": f"Hello, {name}!", "length": len(name)}]
