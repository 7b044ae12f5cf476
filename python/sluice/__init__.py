"""Sluice: publish Python functions as live, authenticated data feeds.

A feed module is one ``.py`` file::

    from datetime import date
    import sluice

    @sluice.feed(cache="5m")
    def sales_by_region(region: str = "EU", since: date = date(2024, 1, 1)):
        \"\"\"Daily sales for one region.\"\"\"
        return sluice.sql("warehouse",
            "select day, region, amount from sales where region = :region and day >= :since",
            region=region, since=since)

The public surface is small on purpose: :func:`feed`, :func:`sql`, :func:`connect`,
:func:`configure`, and the error types. Modules starting with ``_`` are Sluice's own
machinery (the worker that the runtime starts, the frame encoder) and may change.
This package is stdlib-only; pandas, polars, pyarrow and psycopg are used when installed.
"""

from ._encode import ResultError
from ._feed import Feed, FeedDefinitionError, ParameterError, ParamSpec, feed, feeds, get_feed
from ._sql import SourceError, SqlQuery, configure, connect, sql

__all__ = [
    "Feed",
    "FeedDefinitionError",
    "ParamSpec",
    "ParameterError",
    "ResultError",
    "SourceError",
    "SqlQuery",
    "configure",
    "connect",
    "feed",
    "feeds",
    "get_feed",
    "sql",
]

__version__ = "0.1.0"
