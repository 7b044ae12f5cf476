"""The ``@sluice.feed`` decorator: turning a Python function into a feed signature.

A feed's parameters are the public API of the feed: the gateway validates every request
against the signature reported here *before* any user code runs, and documents it in
OpenAPI, OData metadata and the Postgres-wire function signature. So everything that can be
checked is checked at decoration time, and every error names the function, the parameter,
the file and the line, and says what to write instead.

The JSON produced by :meth:`Feed.signature` is exactly ``sluice_core::FeedSignature``
(``crates/sluice-core/src/params.rs``).
"""

from __future__ import annotations

import ast
import datetime as _dt
import inspect
import re
import sys
import textwrap
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, TypeVar, Union, overload

__all__ = [
    "Feed",
    "FeedDefinitionError",
    "ParamSpec",
    "SUPPORTED_TYPES",
    "feed",
    "feeds",
    "get_feed",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Parameter types a feed may declare, in the spelling the protocol uses.
SUPPORTED_TYPES = ("str", "int", "float", "bool", "date", "datetime", "list[str]")

_SUPPORTED_HELP = (
    "supported parameter types are str, int, float, bool, date, datetime and list[str] "
    "(each may be Optional[...] or '... | None' to allow None)"
)

# The same rule as crates/sluice-core/src/names.rs: feed names become URL segments, OData
# entity sets and PostgreSQL table names, so they must be plain lowercase identifiers.
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Cache durations as written by analysts: "30s", "5m", "1h", "1d".
_CACHE_RE = re.compile(r"^[1-9][0-9]*(s|m|h|d)$")

_SCALARS: Dict[Any, str] = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    _dt.date: "date",
    _dt.datetime: "datetime",
}


class FeedDefinitionError(Exception):
    """A ``@sluice.feed`` function cannot be published as written.

    Raised at decoration time (so at import of the feed module). ``file`` and ``line``
    point at the offending code; the message says what to change.
    """

    def __init__(
        self,
        message: str,
        *,
        function: Optional[str] = None,
        parameter: Optional[str] = None,
        file: Optional[str] = None,
        line: Optional[int] = None,
    ) -> None:
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(where + message)
        self.function = function
        self.parameter = parameter
        self.file = file
        self.line = line


@dataclass(frozen=True)
class ParamSpec:
    """One feed parameter, as reported to Sluice."""

    name: str
    type: str
    required: bool
    default: Any = None
    """The Python default (``None`` when ``required`` or when the default is ``None``)."""
    nullable: bool = False

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if not self.required:
            out["default"] = _default_to_json(self.default)
        return out


@dataclass
class Feed:
    """A registered feed: the user's function plus what Sluice needs to serve it."""

    name: str
    func: Callable[..., Any]
    doc: str
    params: List[ParamSpec]
    cache: Optional[str] = None
    key: List[str] = field(default_factory=list)
    columns: Optional[List[str]] = None
    file: Optional[str] = None
    line: Optional[int] = None

    def signature(self) -> Dict[str, Any]:
        """The ``FeedSignature`` JSON object for the HELLO frame."""
        out: Dict[str, Any] = {
            "name": self.name,
            "doc": self.doc,
            "params": [p.to_json() for p in self.params],
        }
        if self.cache is not None:
            out["cache"] = self.cache
        if self.key:
            out["key"] = list(self.key)
        return out

    def coerce(self, raw: Mapping[str, Any]) -> Dict[str, Any]:
        """Turn CALL parameters (JSON values) into the Python values the function expects.

        Rust has already validated them against the signature; this only converts the JSON
        spellings back (``"2024-01-01"`` → ``date``). Missing optional values take the
        Python default. Raises :class:`ParameterError` if a value does not fit anyway.
        """
        if not raw and not any(p.required for p in self.params):
            return {}  # every call of a feed without parameters: skip the set work
        known = {p.name for p in self.params}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ParameterError(
                f"feed '{self.name}' got unknown parameter(s) {', '.join(unknown)}; "
                f"it takes: {', '.join(sorted(known)) or 'no parameters'}"
            )
        out: Dict[str, Any] = {}
        for p in self.params:
            if p.name in raw:
                out[p.name] = coerce_value(p, raw[p.name])
            elif p.required:
                raise ParameterError(f"parameter '{p.name}' of feed '{self.name}' is required ({p.type})")
            # Absent optional parameters are left out so Python applies its own default.
        return out

    def invoke(self, raw_params: Mapping[str, Any]) -> Any:
        """Coerce JSON parameters and call the function."""
        return self.func(**self.coerce(raw_params))


class ParameterError(ValueError):
    """A CALL parameter does not fit the feed's signature (protocol code ``invalid_parameter``)."""


# ---------------------------------------------------------------------------------------
# Registry. Module level, like Flask's app.url_map, but without an app object: one feed
# module is one "app", and the worker loads exactly one module per process.

_REGISTRY: Dict[str, Feed] = {}


def feeds() -> List[Feed]:
    """All feeds registered so far, in definition order."""
    return list(_REGISTRY.values())


def get_feed(name: str) -> Feed:
    """The feed called ``name``; ``KeyError`` naming the known feeds otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(_REGISTRY) or "none"
        raise KeyError(f"no feed named '{name}' (registered feeds: {known})") from None


def _clear_registry() -> None:
    _REGISTRY.clear()


# ---------------------------------------------------------------------------------------
# The decorator.


@overload
def feed(func: F, /) -> F: ...


@overload
def feed(
    *,
    name: Optional[str] = None,
    cache: Optional[str] = None,
    key: Optional[Sequence[str]] = None,
    columns: Optional[Sequence[str]] = None,
) -> Callable[[F], F]: ...


def feed(
    func: Optional[F] = None,
    /,
    *,
    name: Optional[str] = None,
    cache: Optional[str] = None,
    key: Optional[Sequence[str]] = None,
    columns: Optional[Sequence[str]] = None,
) -> Union[F, Callable[[F], F]]:
    """Publish a function as a feed.

    Use it bare or with options::

        @sluice.feed
        def customers(): ...

        @sluice.feed(name="sales", cache="5m", key=["id"])
        def sales_by_region(region: str = "EU", since: date = date(2024, 1, 1)): ...

    Options:
        name: the feed's name (default: the function's name). Lowercase letters, digits, ``_``.
        cache: how long results may be served from cache: ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``.
        key: the columns that identify a row (used by OData).
        columns: column names when the function returns tuples or lists instead of dicts.

    The function itself is returned unchanged, so it can still be called directly from a
    notebook or a test with ordinary Python values.
    """

    def register(fn: F) -> F:
        f = _build_feed(fn, name=name, cache=cache, key=key, columns=columns)
        existing = _REGISTRY.get(f.name)
        if existing is not None and not _same_definition(existing, f):
            raise FeedDefinitionError(
                f"two feeds are named '{f.name}' (the other is defined at "
                f"{existing.file}:{existing.line}); give one of them @sluice.feed(name=...)",
                function=fn.__qualname__,
                file=f.file,
                line=f.line,
            )
        # Re-running the same definition (a notebook cell, importlib.reload) replaces it.
        _REGISTRY[f.name] = f
        try:
            setattr(fn, "__sluice_feed__", f)
        except (AttributeError, TypeError):  # builtins or slotted callables: registry is enough
            pass
        return fn

    if func is not None:
        if not callable(func):
            raise FeedDefinitionError(
                f"@sluice.feed was given {func!r}; use it as @sluice.feed or @sluice.feed(name=..., cache=...)"
            )
        return register(func)
    return register


def _same_definition(a: Feed, b: Feed) -> bool:
    return (a.file, getattr(a.func, "__qualname__", None)) == (b.file, getattr(b.func, "__qualname__", None))


def _build_feed(
    fn: Callable[..., Any],
    *,
    name: Optional[str],
    cache: Optional[str],
    key: Optional[Sequence[str]],
    columns: Optional[Sequence[str]],
) -> Feed:
    # __name__, not __qualname__: "feed 'sales'" reads better than "'test.<locals>.sales'".
    qualname = getattr(fn, "__name__", repr(fn))
    file, line = _location(fn)
    if not inspect.isfunction(fn) and not inspect.ismethod(fn):
        raise FeedDefinitionError(
            f"@sluice.feed must decorate a function defined with 'def', not {type(fn).__name__}",
            function=qualname, file=file, line=line,
        )
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise FeedDefinitionError(
            f"feed '{qualname}' is 'async def'; feeds are plain functions: use 'def'",
            function=qualname, file=file, line=line,
        )

    feed_name = name if name is not None else fn.__name__
    if not isinstance(feed_name, str) or not _NAME_RE.match(feed_name):
        raise FeedDefinitionError(
            f"feed name {feed_name!r} is not valid: use a lowercase letter followed by lowercase "
            f"letters, digits or '_' (at most 63), e.g. @sluice.feed(name=\"sales_by_region\")",
            function=qualname, file=file, line=line,
        )
    if cache is not None and (not isinstance(cache, str) or not _CACHE_RE.match(cache.strip())):
        raise FeedDefinitionError(
            f"feed '{feed_name}' has cache={cache!r}; write a duration like \"30s\", \"5m\", \"1h\" or \"1d\"",
            function=qualname, file=file, line=line,
        )
    key_list = _string_list("key", key, feed_name, qualname, file, line)
    column_list = _string_list("columns", columns, feed_name, qualname, file, line) if columns is not None else None

    doc = inspect.cleandoc(fn.__doc__) if fn.__doc__ else ""
    params = _discover_params(fn, qualname, file, line)
    return Feed(
        name=feed_name,
        func=fn,
        doc=doc,
        params=params,
        cache=cache.strip() if cache is not None else None,
        key=key_list,
        columns=column_list,
        file=file,
        line=line,
    )


def _string_list(
    what: str, value: Optional[Sequence[str]], feed_name: str, qualname: str, file: Optional[str], line: Optional[int]
) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        # key="id" is a common slip; a string is a sequence of characters, which is never meant.
        return [value]
    items = list(value)
    if not all(isinstance(v, str) and v for v in items):
        raise FeedDefinitionError(
            f"feed '{feed_name}' has {what}={value!r}; give a list of column names, e.g. {what}=[\"id\"]",
            function=qualname, file=file, line=line,
        )
    return items


def _location(fn: Callable[..., Any]) -> "tuple[Optional[str], Optional[int]]":
    code = getattr(fn, "__code__", None)
    if code is None:
        return None, None
    line = code.co_firstlineno
    # co_firstlineno is the first decorator's line; point at the 'def' itself, which is
    # where the analyst will look.
    try:
        lines, start = inspect.getsourcelines(fn)
        for i, text in enumerate(lines):
            if re.match(r"\s*(async\s+)?def\s", text):
                line = start + i
                break
    except (OSError, TypeError):
        pass
    return code.co_filename, line


def _param_lines(fn: Callable[..., Any]) -> Dict[str, int]:
    """Line of each parameter in the source file, so errors point at the parameter itself."""
    try:
        lines, start = inspect.getsourcelines(fn)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):
        return {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == fn.__name__:
            a = node.args
            every = [*a.posonlyargs, *a.args, *a.kwonlyargs]
            if a.vararg:
                every.append(a.vararg)
            if a.kwarg:
                every.append(a.kwarg)
            return {arg.arg: start + arg.lineno - 1 for arg in every}
    return {}


def _discover_params(
    fn: Callable[..., Any], qualname: str, file: Optional[str], def_line: Optional[int]
) -> List[ParamSpec]:
    sig = inspect.signature(fn)
    lines = _param_lines(fn)
    try:
        hints = typing.get_type_hints(fn)
        hint_error: Optional[Exception] = None
    except Exception as e:  # NameError for a misspelled or unimported type, mostly
        hints = {}
        hint_error = e

    specs: List[ParamSpec] = []
    for p in sig.parameters.values():
        line = lines.get(p.name, def_line)

        def fail(message: str) -> FeedDefinitionError:
            return FeedDefinitionError(
                f"feed '{qualname}' parameter '{p.name}': {message}",
                function=qualname, parameter=p.name, file=file, line=line,
            )

        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            star = "*" if p.kind == p.VAR_POSITIONAL else "**"
            raise fail(
                f"{star}{p.name} is not supported: a feed's parameters must be named so they can be "
                f"documented and validated; list each one explicitly ({_SUPPORTED_HELP})"
            )
        if p.kind == p.POSITIONAL_ONLY:
            raise fail("positional-only parameters (before '/') are not supported: Sluice passes parameters by name; remove the '/'")

        has_default = p.default is not p.empty
        if p.annotation is p.empty:
            if not has_default or p.default is None:
                raise fail(
                    "has no type annotation and no default to infer one from; "
                    f"annotate it, e.g. '{p.name}: str' ({_SUPPORTED_HELP})"
                )
            inferred = _infer_from_default(p.default)
            if inferred is None:
                raise fail(
                    f"has no type annotation and its default {p.default!r} is of type "
                    f"{type(p.default).__name__}; annotate it ({_SUPPORTED_HELP})"
                )
            ptype, nullable = inferred, False
        else:
            ann = hints.get(p.name, p.annotation)
            if isinstance(ann, str):
                reason = f" ({hint_error})" if hint_error else ""
                raise fail(f"annotation {ann!r} could not be resolved{reason}; import the type it names")
            resolved = _resolve_annotation(ann)
            if resolved is None:
                raise fail(f"type {_type_name(ann)} is not supported; {_SUPPORTED_HELP}")
            ptype, nullable = resolved

        if has_default:
            default = p.default
            if default is None:
                # `x: int = None` is the pre-PEP 604 way of writing Optional; accept it.
                nullable = True
            else:
                default = _check_default(ptype, default, fail)
            specs.append(ParamSpec(p.name, ptype, required=False, default=default, nullable=nullable))
        else:
            specs.append(ParamSpec(p.name, ptype, required=True, nullable=nullable))
    return specs


def _type_name(ann: Any) -> str:
    if isinstance(ann, type):
        return ann.__qualname__ if ann.__module__ == "builtins" else f"{ann.__module__}.{ann.__qualname__}"
    return repr(ann).replace("typing.", "")


def _resolve_annotation(ann: Any) -> "Optional[tuple[str, bool]]":
    """(protocol type name, nullable) for a supported annotation, else None."""
    nullable = False
    origin = typing.get_origin(ann)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(ann, getattr(types, "UnionType"))):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) != 1 or len(typing.get_args(ann)) != 2:
            return None
        ann, nullable = args[0], True
        origin = typing.get_origin(ann)
    if ann in _SCALARS:
        return _SCALARS[ann], nullable
    if origin in (list, List) and typing.get_args(ann) == (str,):
        return "list[str]", nullable
    return None


def _infer_from_default(default: Any) -> Optional[str]:
    # Identity on the exact type: bool is an int and datetime is a date, but the analyst
    # who wrote `flag=True` means bool, and `at=datetime(...)` means datetime.
    t = type(default)
    if t in _SCALARS:
        return _SCALARS[t]
    if isinstance(default, (list, tuple)) and all(isinstance(v, str) for v in default):
        return "list[str]"
    return None


def _check_default(ptype: str, default: Any, fail: Callable[[str], FeedDefinitionError]) -> Any:
    ok: bool
    if ptype == "str":
        ok = isinstance(default, str)
    elif ptype == "int":
        ok = isinstance(default, int) and not isinstance(default, bool)
    elif ptype == "float":
        ok = isinstance(default, (int, float)) and not isinstance(default, bool)
        if ok:
            default = float(default)
    elif ptype == "bool":
        ok = isinstance(default, bool)
    elif ptype == "date":
        ok = isinstance(default, _dt.date) and not isinstance(default, _dt.datetime)
    elif ptype == "datetime":
        ok = isinstance(default, _dt.datetime)
    else:  # list[str]
        ok = isinstance(default, (list, tuple)) and all(isinstance(v, str) for v in default)
        if ok:
            default = list(default)
    if not ok:
        raise fail(f"default {default!r} ({type(default).__name__}) does not match its type {ptype}")
    return default


def _default_to_json(value: Any) -> Any:
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


# ---------------------------------------------------------------------------------------
# CALL parameters: JSON → Python.


def coerce_value(spec: ParamSpec, value: Any) -> Any:
    """Convert one JSON parameter value to the Python type of ``spec``."""
    if value is None:
        if spec.nullable or not spec.required:
            return None
        raise ParameterError(f"parameter '{spec.name}' may not be null: expected {spec.type}")
    t = spec.type
    try:
        if t == "str" and isinstance(value, str):
            return value
        if t == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t == "int" and isinstance(value, float) and value.is_integer():
            return int(value)
        if t == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t == "bool" and isinstance(value, bool):
            return value
        if t == "date" and isinstance(value, str):
            return _dt.date.fromisoformat(value[:10]) if len(value) == 10 else _dt.datetime.fromisoformat(value).date()
        if t == "datetime" and isinstance(value, str):
            return parse_datetime(value)
        if t == "list[str]" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    except ValueError:
        pass
    raise ParameterError(f"parameter '{spec.name}' has value {value!r}: expected {spec.type}")


def parse_datetime(text: str) -> _dt.datetime:
    """ISO 8601 as Rust sends it: ``2024-03-01T10:00:00``, with optional fraction and offset
    (``+02:00`` or ``Z``). Python 3.11's ``fromisoformat`` handles all of these; the ``Z``
    replacement keeps older interpreters working."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return _dt.datetime.fromisoformat(text)
