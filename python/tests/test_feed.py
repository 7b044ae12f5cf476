"""Signature discovery, decoration-time errors and CALL parameter coercion."""

from __future__ import annotations

import datetime as dt
import importlib.util
import textwrap
import typing
from pathlib import Path
from typing import List, Optional

import pytest

import sluice
from sluice._feed import ParameterError


def sig(name: str) -> dict:
    return sluice.get_feed(name).signature()


def test_every_supported_type_and_default_is_reported_like_feedsignature() -> None:
    @sluice.feed(cache="5m", key=["day", "region"])
    def sales(
        region: str,
        limit: int = 10,
        ratio: float = 0.5,
        active: bool = True,
        since: dt.date = dt.date(2024, 1, 1),
        at: dt.datetime = dt.datetime(2024, 3, 1, 10, 30),
        tags: list[str] = ["a", "b"],
        legacy: List[str] = [],
        maybe: Optional[int] = None,
        pep604: "float | None" = None,
    ):
        """Daily sales.

        One line more."""
        return []

    assert sig("sales") == {
        "name": "sales",
        "doc": "Daily sales.\n\nOne line more.",
        "params": [
            {"name": "region", "type": "str", "required": True},
            {"name": "limit", "type": "int", "required": False, "default": 10},
            {"name": "ratio", "type": "float", "required": False, "default": 0.5},
            {"name": "active", "type": "bool", "required": False, "default": True},
            {"name": "since", "type": "date", "required": False, "default": "2024-01-01"},
            {"name": "at", "type": "datetime", "required": False, "default": "2024-03-01T10:30:00"},
            {"name": "tags", "type": "list[str]", "required": False, "default": ["a", "b"]},
            {"name": "legacy", "type": "list[str]", "required": False, "default": []},
            {"name": "maybe", "type": "int", "required": False, "default": None},
            {"name": "pep604", "type": "float", "required": False, "default": None},
        ],
        "cache": "5m",
        "key": ["day", "region"],
    }


def test_bare_decorator_uses_function_name_and_omits_optional_fields() -> None:
    @sluice.feed
    def customers():
        return []

    assert sig("customers") == {"name": "customers", "doc": "", "params": []}
    assert [f.name for f in sluice.feeds()] == ["customers"]


def test_name_option_and_function_stays_directly_callable() -> None:
    @sluice.feed(name="renamed")
    def original(n: int = 2):
        return [{"n": n}]

    assert sluice.get_feed("renamed").func is original
    assert original(5) == [{"n": 5}]  # plain Python call, as in a notebook
    assert original.__name__ == "original"


def test_untyped_parameters_take_the_type_of_their_default() -> None:
    @sluice.feed
    def inferred(a="x", b=1, c=1.5, d=False, e=dt.date(2024, 1, 2), f=dt.datetime(2024, 1, 2, 3, 4), g=["x"]):
        return []

    assert [(p["name"], p["type"]) for p in sig("inferred")["params"]] == [
        ("a", "str"), ("b", "int"), ("c", "float"), ("d", "bool"),
        ("e", "date"), ("f", "datetime"), ("g", "list[str]"),
    ]


def test_string_annotations_are_resolved() -> None:
    @sluice.feed
    def later(since: "dt.date", names: "typing.Optional[list[str]]" = None):
        return []

    assert [(p["name"], p["type"]) for p in sig("later")["params"]] == [("since", "date"), ("names", "list[str]")]


def _load(tmp_path: Path, source: str, name: str = "feedmod"):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return path, module


def test_unsupported_type_names_function_parameter_type_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(sluice.FeedDefinitionError) as info:
        _load(tmp_path, """\
            import sluice

            @sluice.feed
            def report(
                region: str,
                options: dict = {},
            ):
                return []
            """)
    e = info.value
    msg = str(e)
    assert e.line == 6, msg  # the parameter's own line, not the decorator's
    assert e.file and e.file.endswith("feedmod.py")
    assert e.function == "report" and e.parameter == "options"
    assert msg.startswith(f"{e.file}:6: ")
    for word in ("'report'", "'options'", "dict", "str, int, float, bool, date, datetime and list[str]"):
        assert word in msg, msg


class Point:
    pass


@pytest.mark.parametrize(
    "annotation, shown",
    [
        (dict, "dict"),
        (Point, "Point"),
        (list, "list"),
        (list[int], "list[int]"),
        (typing.Union[int, str], "Union[int, str]"),
        (typing.Optional[typing.Dict[str, int]], "Dict"),
        (bytes, "bytes"),
    ],
)
def test_unsupported_annotations_are_rejected(annotation: object, shown: str) -> None:
    def f(x):  # annotation set below so the parametrised type is used as-is
        return []

    f.__annotations__ = {"x": annotation}
    with pytest.raises(sluice.FeedDefinitionError, match=r"parameter 'x'.*not supported") as info:
        sluice.feed(f)
    assert shown in str(info.value)
    assert sluice.feeds() == []


def test_args_kwargs_positional_only_and_missing_annotation_are_rejected() -> None:
    with pytest.raises(sluice.FeedDefinitionError, match=r"\*args is not supported"):
        @sluice.feed
        def a(*args: str):
            return []

    with pytest.raises(sluice.FeedDefinitionError, match=r"\*\*kw is not supported"):
        @sluice.feed
        def b(**kw: str):
            return []

    with pytest.raises(sluice.FeedDefinitionError, match="positional-only"):
        @sluice.feed
        def c(x: int, /):
            return []

    with pytest.raises(sluice.FeedDefinitionError, match=r"'region'.*no type annotation.*'region: str'"):
        @sluice.feed
        def d(region):
            return []

    with pytest.raises(sluice.FeedDefinitionError, match=r"no type annotation and no default"):
        @sluice.feed
        def e(region=None):
            return []

    with pytest.raises(sluice.FeedDefinitionError, match=r"'opts': has no type annotation and its default \{\} is of type dict"):
        @sluice.feed
        def g(opts={}):
            return []


def test_wrong_default_bad_name_bad_cache_duplicates_and_async_are_rejected() -> None:
    with pytest.raises(sluice.FeedDefinitionError, match=r"default 'ten' \(str\) does not match its type int"):
        @sluice.feed
        def a(n: int = "ten"):
            return []

    with pytest.raises(sluice.FeedDefinitionError, match="feed name 'Sales-2' is not valid"):
        @sluice.feed(name="Sales-2")
        def b():
            return []

    with pytest.raises(sluice.FeedDefinitionError, match=r"cache='five minutes'.*\"5m\""):
        @sluice.feed(cache="five minutes")
        def c():
            return []

    with pytest.raises(sluice.FeedDefinitionError, match="'async def'"):
        @sluice.feed
        async def d():
            return []

    @sluice.feed(name="same")
    def first():
        return []

    with pytest.raises(sluice.FeedDefinitionError, match=r"two feeds are named 'same'.*name=\.\.\."):
        @sluice.feed(name="same")
        def second():
            return []


def test_unresolvable_string_annotation_says_what_to_import() -> None:
    with pytest.raises(sluice.FeedDefinitionError, match=r"'Decimall'.*could not be resolved.*import"):
        @sluice.feed
        def f(x: "Decimall"):  # noqa: F821
            return []


def test_call_params_are_coerced_back_to_python_types() -> None:
    @sluice.feed
    def f(
        s: str,
        i: int,
        x: float,
        b: bool,
        d: dt.date,
        t: dt.datetime,
        tz: dt.datetime,
        tags: list[str],
        opt: Optional[dt.date] = None,
        dflt: int = 7,
    ):
        return locals()

    feed = sluice.get_feed("f")
    got = feed.invoke({
        "s": "EU", "i": 3, "x": 2, "b": False, "d": "2024-02-29",
        "t": "2024-03-01T10:00:00.250", "tz": "2024-03-01T10:00:00+02:00",
        "tags": ["a", "b"], "opt": None,
    })
    assert got == {
        "s": "EU", "i": 3, "x": 2.0, "b": False, "d": dt.date(2024, 2, 29),
        "t": dt.datetime(2024, 3, 1, 10, 0, 0, 250000),
        "tz": dt.datetime(2024, 3, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "tags": ["a", "b"], "opt": None, "dflt": 7,
    }
    assert isinstance(got["x"], float)
    assert feed.coerce({"s": "", "i": 1, "x": 1.5, "b": True, "d": "2024-01-01", "t": "2024-01-01T00:00:00Z",
                        "tz": "2024-01-01T00:00:00Z", "tags": []})["t"].tzinfo == dt.timezone.utc


@pytest.mark.parametrize(
    "params, message",
    [
        ({"n": "3"}, r"parameter 'n' has value '3': expected int"),
        ({"n": True}, r"expected int"),
        ({"n": 1, "d": "2024-13-01"}, r"parameter 'd' has value '2024-13-01': expected date"),
        ({"n": 1, "zzz": 1}, r"unknown parameter\(s\) zzz"),
        ({}, r"parameter 'n' of feed 'g' is required"),
        ({"n": None}, r"'n' may not be null"),
    ],
)
def test_bad_call_params_raise_parameter_error(params: dict, message: str) -> None:
    @sluice.feed
    def g(n: int, d: dt.date = dt.date(2024, 1, 1)):
        return []

    with pytest.raises(ParameterError, match=message):
        sluice.get_feed("g").coerce(params)
