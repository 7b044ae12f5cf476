"""The worker shim: one Python process serving one feed module to the Rust runtime.

    python -s -m sluice._worker --connect SOCK --module FILE [--memory-mb N]

The protocol is ``docs/worker-protocol.md``. This file owns the loop: load the module (or
explain precisely why it cannot be loaded), say HELLO, then serve CALLs one at a time until
SHUTDOWN or the socket closes. User code failing is a normal event here: it becomes an ERROR
frame and the worker goes on serving. Only a broken socket ends the process.

Start it from a working directory other than the feed module's folder (or with ``python -P``):
``-m`` puts the cwd first on ``sys.path``, so a feed file named ``sluice.py`` there would
hide this package before any of this code runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import socket
import struct
import sys
import time
import traceback
import types
from typing import Any, Dict, List, Optional, Tuple

from . import _encode, _feed, _sql
from ._encode import ARROW, CALL, END, ERROR, HELLO, LOAD_ERROR, ROWS, SHUTDOWN, SQL

# Results of at most this many rows (in a list) go as ROWS even when pyarrow is present.
SMALL_RESULT_ROWS = 256
# A call's result may be held back for the next call's only when the call took less than this.
HOLD_BACK_S = 0.0005

_SDK_DIR = os.path.dirname(os.path.abspath(__file__))
CAPTURE_BYTES = 64 * 1024
_TRUNCATED = "[... truncated]\n"


# ---------------------------------------------------------------------------------------
# Framing.

# Built once: json.dumps with keyword arguments builds an encoder on every call.
_frame_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


class Connection:
    """Length-prefixed frames over a stream socket (u32 BE length of kind+payload, u8 kind)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        # While corked, frames collect here and leave in one write: a small call's rows and
        # its END then cost one syscall and one wake-up on the Rust side instead of two.
        self.corked: Optional[List[bytes]] = None
        self.inbuf = bytearray()

    def send(self, kind: int, payload: bytes) -> None:
        if len(payload) + 1 > _encode.MAX_FRAME_BYTES:
            raise ValueError(f"frame of {len(payload)} bytes exceeds the protocol limit")
        frame = struct.pack(">IB", len(payload) + 1, kind) + payload
        if self.corked is not None:
            self.corked.append(frame)
        else:
            self.sock.sendall(frame)

    def cork(self) -> None:
        if self.corked is None:
            self.corked = []

    def uncork(self) -> None:
        frames, self.corked = self.corked, None
        if frames:
            self.sock.sendall(b"".join(frames))

    def send_json(self, kind: int, obj: Any) -> None:
        self.send(kind, _frame_json(obj).encode())

    def recv(self) -> Optional[Tuple[int, bytes]]:
        """The next frame, or None when the peer closed the socket.

        Reads are buffered: a CALL usually arrives whole in one recv, and this is one
        syscall per call on the hot path instead of two.
        """
        buf = self.inbuf
        while True:
            if len(buf) >= 5:
                n = int.from_bytes(buf[:4], "big")
                if n < 1 or n > _encode.MAX_FRAME_BYTES:
                    raise ConnectionError(f"bad frame length {n}")
                if len(buf) >= 4 + n:
                    kind, payload = buf[4], bytes(buf[5 : 4 + n])
                    del buf[: 4 + n]
                    return kind, payload
                want = 4 + n - len(buf)
            else:
                want = 5 - len(buf)
            # About to wait for the peer: what is held back must go first.
            self.uncork()
            chunk = self.sock.recv(max(want, 65536))
            if not chunk:
                return None
            buf += chunk


# ---------------------------------------------------------------------------------------
# Output capture.


class TailBuffer(io.TextIOBase):
    """A text stream keeping only the last ``limit`` bytes (UTF-8) written to it."""

    encoding = "utf-8"  # libraries that ask (logging, click) get a sensible answer

    def __init__(self, limit: int = CAPTURE_BYTES) -> None:
        self.limit = limit
        self.parts: List[str] = []
        self.size = 0
        self.truncated = False

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self.parts.append(s)
        self.size += len(s.encode("utf-8", "replace"))
        # Trim lazily, dropping whole writes while they are not needed for the tail.
        while self.size > 2 * self.limit and len(self.parts) > 1:
            dropped = self.parts.pop(0)
            self.size -= len(dropped.encode("utf-8", "replace"))
            self.truncated = True
        return len(s)

    def take(self) -> str:
        """What was written since the last ``take``, and start afresh (the worker reuses
        its two buffers: building them for every call cost more than a small call's rows)."""
        if not self.parts:
            return ""
        text = self.getvalue()
        self.parts.clear()
        self.size = 0
        self.truncated = False
        return text

    def getvalue(self) -> str:
        data = "".join(self.parts).encode("utf-8", "replace")
        if len(data) > self.limit:
            data = data[-self.limit :]
            self.truncated = True
        text = data.decode("utf-8", "ignore")
        return _TRUNCATED + text if self.truncated else text


class Capture:
    """Redirect sys.stdout/sys.stderr for one call at a time; restore them afterwards.
    Reusable: ``take()`` on each buffer after a call reads and empties it."""

    def __init__(self) -> None:
        self.out, self.err = TailBuffer(), TailBuffer()

    def __enter__(self) -> "Capture":
        self.saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self.out, self.err
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.stdout, sys.stderr = self.saved


# ---------------------------------------------------------------------------------------
# Tracebacks that show the analyst's code, not ours.


def _is_sdk_frame(filename: str) -> bool:
    return os.path.dirname(os.path.abspath(filename)) == _SDK_DIR


def user_traceback(exc: BaseException) -> str:
    """The traceback with sluice's own frames (and importlib's) removed."""
    te = traceback.TracebackException.from_exception(exc)
    _trim(te)
    return "".join(te.format())


def _trim(te: traceback.TracebackException) -> None:
    te.stack = traceback.StackSummary.from_list(
        [f for f in te.stack if not _is_sdk_frame(f.filename) and not f.filename.startswith("<frozen importlib")]
    )
    for nested in (te.__cause__, te.__context__):
        if nested is not None:
            _trim(nested)


def _user_location(exc: BaseException, module_file: str) -> Tuple[Optional[str], Optional[int]]:
    """The deepest frame of the traceback that is in the user's file."""
    target = os.path.abspath(module_file)
    found: Tuple[Optional[str], Optional[int]] = (None, None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.abspath(frame.filename) == target:
            found = (module_file, frame.lineno)
    return found


# ---------------------------------------------------------------------------------------
# Loading the feed module.


class LoadError(Exception):
    def __init__(self, message: str, file: Optional[str], line: Optional[int], tb: str = "") -> None:
        super().__init__(message)
        self.message, self.file, self.line, self.tb = message, file, line, tb

    def payload(self) -> Dict[str, Any]:
        return {
            "code": "invalid_feed_module",
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "traceback": self.tb,
        }


def load_module(path: str) -> List[_feed.Feed]:
    """Import the feed file and return its feeds, or raise LoadError explaining what to fix."""
    name = os.path.splitext(os.path.basename(path))[0]
    if not name.isidentifier():
        name = "feed_module"
    # A feed file called json.py or sluice.py must not replace the real module in
    # sys.modules (its own `import sluice` would then import itself).
    if name in sys.modules or name in getattr(sys, "stdlib_module_names", ()):
        name = f"_sluice_feed_{name}"
    _feed._clear_registry()
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise LoadError(f"{path} cannot be imported as a Python module; feed files end in .py", path, None)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        # The feed's own folder first, so it can import helper modules sitting next to it.
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
        spec.loader.exec_module(module)
    except LoadError:
        raise
    except FileNotFoundError as e:
        if getattr(e, "filename", None) and os.path.abspath(e.filename) == os.path.abspath(path):
            raise LoadError(f"feed module {path} does not exist", path, None) from e
        raise _load_error(e, path) from e
    except SyntaxError as e:
        # e.filename may be another module the feed imports; report where the error is.
        file = e.filename or path
        line = e.lineno
        detail = f"{e.msg} (line {line}" + (f", column {e.offset})" if e.offset else ")")
        text = (e.text or "").rstrip("\n")
        msg = f"{file}:{line}: syntax error: {detail}" + (f"\n    {text.strip()}" if text else "")
        raise LoadError(msg + "\nfix the syntax and deploy again", file, line, user_traceback(e)) from e
    except _feed.FeedDefinitionError as e:
        raise LoadError(str(e), e.file or path, e.line, user_traceback(e)) from e
    except BaseException as e:  # noqa: BLE001 - anything at import time is the module's fault
        if isinstance(e, (KeyboardInterrupt,)):
            raise
        raise _load_error(e, path) from e
    found = _feed.feeds()
    if not found:
        raise LoadError(
            f"{path} defines no feed: decorate at least one function with @sluice.feed "
            "(and 'import sluice' at the top)",
            path,
            None,
        )
    return found


def _load_error(e: BaseException, path: str) -> LoadError:
    file, line = _user_location(e, path)
    file = file or path
    where = f"{file}:{line}: " if line else f"{file}: "
    if isinstance(e, ModuleNotFoundError) and e.name:
        top = e.name.split(".")[0]
        msg = (
            f"{where}cannot import '{e.name}': add '{_pip_name(top)}' to the dependencies in the "
            "'# /// script' block at the top of the file"
        )
    elif isinstance(e, ImportError):
        msg = f"{where}import failed: {e}; check the name, and that the package is listed in the '# /// script' dependencies"
    elif isinstance(e, SystemExit):
        msg = f"{where}the module called exit() while being imported; feed modules must not exit at import time"
    else:
        msg = (
            f"{where}importing the module raised {type(e).__name__}: {e}; code at the top level of a "
            "feed file runs when the feed starts, so move work that can fail into the feed function"
        )
    return LoadError(msg, file, line, user_traceback(e))


# Import names whose distribution is named differently; the common surprises.
_PIP_NAMES = {"yaml": "pyyaml", "sklearn": "scikit-learn", "bs4": "beautifulsoup4", "PIL": "pillow", "psycopg2": "psycopg2-binary", "dateutil": "python-dateutil", "cv2": "opencv-python"}


def _pip_name(module: str) -> str:
    return _PIP_NAMES.get(module, module)


# ---------------------------------------------------------------------------------------
# Serving calls.


class Worker:
    def __init__(self, conn: Connection, feeds: List[_feed.Feed]) -> None:
        self.conn = conn
        self.feeds = {f.name: f for f in feeds}
        # Each feed's last call duration, seconds: whether a result may wait behind its next call.
        self.last_s: Dict[str, float] = {}
        # pyarrow costs ~40 MB per process to import; a worker that only sends small
        # results or SQL passthroughs never needs it, so it is imported on first use.
        self.has_pyarrow = _encode.pyarrow_available()
        self._pa: Any = None
        self.capture = Capture()

    @property
    def pa(self) -> Any:
        if self._pa is None and self.has_pyarrow:
            self._pa = _encode.load_pyarrow()
        return self._pa

    def hello(self) -> Dict[str, Any]:
        return {
            "pid": os.getpid(),
            "python": platform.python_version(),
            "pyarrow": self.has_pyarrow,
            "feeds": [f.signature() for f in self.feeds.values()],
        }

    def serve(self) -> int:
        self.conn.send_json(HELLO, self.hello())
        while True:
            frame = self.conn.recv()
            if frame is None:
                return 0
            kind, payload = frame
            if kind == SHUTDOWN:
                self.conn.uncork()
                return 0
            if kind != CALL:
                # A protocol bug on the Rust side; say so, but keep serving.
                self.conn.send_json(ERROR, _error("internal", "ProtocolError", f"expected CALL (3) or SHUTDOWN (9), got frame kind {kind}"))
                continue
            try:
                # From str: json.loads on bytes first sniffs the encoding (~2 us per call).
                call = json.loads(payload.decode())
            except ValueError as e:
                self.conn.send_json(ERROR, _error("internal", "ProtocolError", f"CALL payload is not JSON: {e}"))
                continue
            self.call(call)

    def call(self, call: Dict[str, Any]) -> None:
        started = time.perf_counter()
        name = call.get("feed")
        f = self.feeds.get(name) if isinstance(name, str) else None
        if f is None:
            self.conn.send_json(
                ERROR,
                _error("internal", "UnknownFeed", f"this worker has no feed {name!r}; it serves: {', '.join(self.feeds)}"),
            )
            return
        # A quick call's frames may wait for the next call when it is already here (queued
        # behind this one by the runtime): `recv` finds it buffered, and both results then
        # leave in one write that wakes the Rust side once instead of twice. They wait only
        # behind a feed whose last call was quick too, and `recv` sends what is held before
        # it would block, so a held result is late by about one quick call at most.
        if self.last_s.get(f.name, HOLD_BACK_S + 1) > HOLD_BACK_S:
            self.conn.uncork()
        try:
            params = f.coerce(call.get("params") or {})
        except _feed.ParameterError as e:
            self.conn.send_json(ERROR, _error("invalid_parameter", "ParameterError", str(e)))
            return
        try:
            self._run(f, params, call, started)
        except BaseException:
            self.conn.uncork()
            raise
        took = self.last_s[f.name] = time.perf_counter() - started
        if took > HOLD_BACK_S:
            self.conn.uncork()

    def _run(self, f: _feed.Feed, params: Dict[str, Any], call: Dict[str, Any], started: float) -> None:
        rows = 0
        capture = self.capture
        error: Optional[Dict[str, Any]] = None
        token = _sql.enter_call(call.get("sources"))
        with capture:
            try:
                result = f.func(**params)
                if isinstance(result, _sql.SqlQuery) and call.get("passthrough"):
                    self.conn.cork()
                    self.conn.send_json(SQL, result.to_frame_json())
                else:
                    # A few rows are cheaper as ROWS (~30 us) than as an Arrow IPC stream
                    # (~300 us, mostly fixed cost): it decides the latency of small feeds.
                    small = isinstance(result, (list, tuple)) and len(result) <= SMALL_RESULT_ROWS
                    if not small:
                        # A big result streams at once, behind nothing held back.
                        self.conn.uncork()
                    pa = None if small else self.pa
                    if small:
                        self.conn.cork()
                    quick = _encode.small_rows_frame(result) if small and f.columns is None else None
                    frames = (quick,) if quick is not None else _encode.encode(result, columns=f.columns, pa=pa)
                    for frame in frames:
                        self.conn.send(frame.kind, frame.payload)
                        rows += frame.rows
            except (BrokenPipeError, ConnectionResetError):
                raise
            except MemoryError:
                # Past RLIMIT_AS; continuing risks a half-broken interpreter. Report and let
                # Rust restart us.
                error = _error("feed_raised", "MemoryError", "the feed ran out of memory (the worker's memory limit); return fewer rows or stream them with a generator")
            except Exception as e:  # noqa: BLE001 - user code may raise anything
                error = self._describe(e)
            except SystemExit as e:
                # exit() in a feed would take the warm worker down with it; it is a failed call.
                error = _error(
                    "feed_raised", "SystemExit",
                    f"the feed called exit({e.code!r}); return rows (or raise an exception) instead",
                    user_traceback(e),
                )
            finally:
                _sql.exit_call(token)
        out, err = capture.out.take(), capture.err.take()
        if error is not None:
            error.update(stdout=out, stderr=err)
            self.conn.send_json(ERROR, error)
            if error["type"] == "MemoryError":
                raise SystemExit(3)
            return
        duration_ms = (time.perf_counter() - started) * 1000.0
        if out or err:
            self.conn.send_json(END, {"rows": rows, "stdout": out, "stderr": err, "duration_ms": duration_ms})
        else:  # the usual case, without a json.dumps
            self.conn.send(END, b'{"rows":%d,"stdout":"","stderr":"","duration_ms":%.4f}' % (rows, duration_ms))

    def _describe(self, e: Exception) -> Dict[str, Any]:
        if isinstance(e, _sql.SourceError):
            code = "source_query_failed"
        elif isinstance(e, _encode.ResultError):
            code = "feed_raised"
        elif _is_db_error(e):
            code = "source_query_failed"
        else:
            code = "feed_raised"
        return _error(code, type(e).__name__, str(e) or type(e).__name__, user_traceback(e))


def _is_db_error(e: BaseException) -> bool:
    # DB-API drivers raise their own Error hierarchies; recognise them by module so that
    # a bad query is reported as a source problem rather than a bug in the feed.
    mod = type(e).__module__.split(".")[0]
    return mod in ("sqlite3", "psycopg", "psycopg2")


def _error(code: str, typ: str, message: str, tb: str = "") -> Dict[str, Any]:
    return {"code": code, "type": typ, "message": message, "traceback": tb, "stdout": "", "stderr": ""}


# ---------------------------------------------------------------------------------------
# Entry point.


def _set_memory_limit(mb: int) -> None:
    try:
        import resource
    except ImportError:  # not on Unix: the Rust side enforces limits another way
        return
    limit = mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY and hard < limit:
        limit = hard
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sluice._worker", description="Serve one feed module to the Sluice runtime.")
    parser.add_argument("--connect", required=True, metavar="SOCK", help="Unix socket path the runtime listens on")
    parser.add_argument("--module", required=True, metavar="FILE", help="the feed module (.py)")
    parser.add_argument("--memory-mb", type=int, metavar="N", help="address-space limit for this process")
    args = parser.parse_args(argv)

    if args.memory_mb:
        _set_memory_limit(args.memory_mb)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(args.connect)
    conn = Connection(sock)
    try:
        try:
            feeds = load_module(args.module)
        except LoadError as e:
            conn.send_json(LOAD_ERROR, e.payload())
            return 1
        return Worker(conn, feeds).serve()
    except (BrokenPipeError, ConnectionResetError):
        return 0
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
