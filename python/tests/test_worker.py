"""The worker shim: in-process against a socketpair, and end to end as the real
`python -m sluice._worker` subprocess speaking frames over a Unix socket."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

import sluice
from sluice import _encode, _worker

from framing import (
    ARROW, CALL, END, ERROR, HELLO, LOAD_ERROR, ROWS, SHUTDOWN, SQL,
    arrow_rows, read_call, read_frame, rows_rows, write_json,
)

PYTHON_DIR = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------
# In-process: the Worker class over a socketpair.


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("create table sales (day text, region text, amount real)")
        db.executemany("insert into sales values (?, ?, ?)", [("2024-01-01", "EU", 10.0), ("2024-01-02", "US", 7.0)])
    db.close()
    return path


def serve_in_thread(pa_available: bool, monkeypatch: pytest.MonkeyPatch) -> Tuple[socket.socket, threading.Thread, Dict[str, int]]:
    if not pa_available:
        monkeypatch.setattr(_encode, "load_pyarrow", lambda: None)
        monkeypatch.setattr(_encode, "pyarrow_available", lambda: False)
    ours, theirs = socket.socketpair()
    result: Dict[str, int] = {}
    worker = _worker.Worker(_worker.Connection(theirs), sluice.feeds())
    def run() -> None:
        try:
            result["rc"] = worker.serve()
        finally:
            theirs.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return ours, t, result


def test_sql_passthrough_sends_a_sql_frame_and_otherwise_materialises(shop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pyarrow")

    @sluice.feed
    def by_region(region: str = "EU"):
        return sluice.sql("shop", "select day, amount from sales where region = :region", region=region)

    sock, thread, result = serve_in_thread(True, monkeypatch)
    kind, hello = read_frame(sock)  # type: ignore[misc]
    assert kind == HELLO and json.loads(hello)["pyarrow"] is True
    sources = {"shop": {"kind": "sqlite", "path": str(shop)}}

    write_json(sock, CALL, {"id": "1", "feed": "by_region", "params": {"region": "US"}, "sources": sources, "passthrough": True})
    frames = read_call(sock)
    assert [k for k, _ in frames] == [SQL, END]
    assert frames[0][1] == {"source": "shop", "query": "select day, amount from sales where region = :region", "params": {"region": "US"}}
    assert frames[1][1]["rows"] == 0

    write_json(sock, CALL, {"id": "2", "feed": "by_region", "params": {"region": "US"}, "sources": sources, "passthrough": False})
    frames = read_call(sock)
    assert [k for k, _ in frames] == [ARROW, END]
    assert arrow_rows([frames[0][1]]) == [{"day": "2024-01-02", "amount": 7.0}]
    assert frames[1][1]["rows"] == 1

    # Sources only exist for the duration of a call.
    with pytest.raises(sluice.SourceError):
        sluice.connect("shop")
    write_json(sock, SHUTDOWN, {})
    thread.join(5)
    assert result["rc"] == 0
    sock.close()


def test_without_pyarrow_the_worker_sends_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    @sluice.feed
    def nums(n: int = 3):
        return ({"i": i, "half": i / 2} for i in range(n))

    sock, thread, result = serve_in_thread(False, monkeypatch)
    kind, hello = read_frame(sock)  # type: ignore[misc]
    assert json.loads(hello)["pyarrow"] is False
    write_json(sock, CALL, {"id": "1", "feed": "nums", "params": {"n": 2}, "sources": {}, "passthrough": True})
    frames = read_call(sock)
    assert [k for k, _ in frames] == [ROWS, END]
    assert frames[0][1]["types"] == ["int", "float"]
    assert rows_rows([frames[0][1]]) == [{"i": 0, "half": 0.0}, {"i": 1, "half": 0.5}]
    sock.close()  # closing the socket ends the worker cleanly
    thread.join(5)
    assert result["rc"] == 0


def test_bad_params_unknown_feed_bad_results_and_exit_are_errors_not_crashes(monkeypatch: pytest.MonkeyPatch) -> None:
    @sluice.feed
    def f(n: int = 1):
        return {1, 2}

    @sluice.feed
    def quits():
        print("bye")
        sys.exit(2)

    sock, thread, _ = serve_in_thread(False, monkeypatch)
    read_frame(sock)
    write_json(sock, CALL, {"id": "1", "feed": "f", "params": {"n": "x"}, "sources": {}, "passthrough": False})
    (kind, err), = read_call(sock)
    assert kind == ERROR and err["code"] == "invalid_parameter" and "'n'" in err["message"]
    write_json(sock, CALL, {"id": "2", "feed": "nope", "params": {}, "sources": {}, "passthrough": False})
    (kind, err), = read_call(sock)
    assert err["code"] == "internal" and "no feed 'nope'" in err["message"] and "serves: f" in err["message"]
    write_json(sock, CALL, {"id": "3", "feed": "f", "params": {}, "sources": {}, "passthrough": False})
    (kind, err), = read_call(sock)
    assert err["code"] == "feed_raised" and err["type"] == "ResultError" and "returned a set" in err["message"]
    assert "a list of dicts" in err["message"]
    write_json(sock, CALL, {"id": "4", "feed": "quits", "params": {}, "sources": {}, "passthrough": False})
    (kind, err), = read_call(sock)
    assert err["code"] == "feed_raised" and err["type"] == "SystemExit" and "exit(2)" in err["message"]
    assert err["stdout"] == "bye\n" and "in quits" in err["traceback"]
    assert sys.stdout is not None and not isinstance(sys.stdout, _worker.TailBuffer)
    # ...and the worker still serves.
    write_json(sock, CALL, {"id": "5", "feed": "f", "params": {"n": "x"}, "sources": {}, "passthrough": False})
    assert read_call(sock)[0][1]["code"] == "invalid_parameter"
    sock.close()
    thread.join(5)


def test_tail_buffer_keeps_the_last_64k_and_marks_truncation() -> None:
    b = _worker.TailBuffer(limit=10)
    b.write("hello ")
    assert b.getvalue() == "hello "
    for i in range(100):
        b.write(f"line {i}\n")
    v = b.getvalue()
    assert v.startswith("[... truncated]\n") and v.endswith("line 99\n")
    assert len(v.encode()) <= 10 + len("[... truncated]\n")


# ---------------------------------------------------------------------------------------
# End to end: the real worker process.


FEED_MODULE = '''\
# /// script
# dependencies = []
# ///
import resource
import sys
from datetime import date

import sluice


@sluice.feed(cache="1m", key=["i"])
def hello(name: str = "world", since: date = date(2024, 1, 1), n: int = 2):
    """Say hello."""
    print(f"hello {name}")
    print("careful", file=sys.stderr)
    return [{"i": i, "name": name, "since": since} for i in range(n)]


def helper(x):
    raise ValueError(f"bad x {x}")


@sluice.feed
def boom(x: int = 1):
    print("before boom")
    helper(x)


@sluice.feed
def chatty():
    for i in range(20000):
        print("%08d" % i)


@sluice.feed
def limits():
    return [{"soft": resource.getrlimit(resource.RLIMIT_AS)[0]}]
'''


class WorkerProcess:
    def __init__(self, module_source: str, no_site: bool = False, memory_mb: Optional[int] = None,
                 filename: str = "my_feeds.py") -> None:
        # Unix socket paths are limited to ~108 bytes; pytest's tmp_path can be longer.
        self.dir = tempfile.mkdtemp(prefix="sluice-w-")
        # The module sits in its own folder, not the worker's cwd: `python -m` puts the cwd
        # first on sys.path, where a feed file named sluice.py would hide the SDK itself
        # (the runtime must likewise start workers with -P or from another directory).
        os.mkdir(os.path.join(self.dir, "src"))
        self.module = os.path.join(self.dir, "src", filename)
        with open(self.module, "w") as f:
            f.write(textwrap.dedent(module_source))
        sock_path = os.path.join(self.dir, "w.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(sock_path)
        self.listener.listen(1)
        self.listener.settimeout(20)
        # Like the runtime: a cleared environment with only what the worker needs.
        env = {"PATH": os.environ.get("PATH", ""), "HOME": self.dir, "LANG": "C.UTF-8", "PYTHONPATH": str(PYTHON_DIR),
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
        # -S (no site-packages at all) proves the worker runs on the standard library alone.
        args = [sys.executable, "-S" if no_site else "-s", "-m", "sluice._worker", "--connect", sock_path, "--module", self.module]
        if memory_mb:
            args += ["--memory-mb", str(memory_mb)]
        self.proc = subprocess.Popen(args, env=env, cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.sock, _ = self.listener.accept()
        self.sock.settimeout(20)

    def call(self, feed: str, params: Optional[Dict[str, Any]] = None, passthrough: bool = True) -> List[Tuple[int, Any]]:
        write_json(self.sock, CALL, {"id": "x", "feed": feed, "params": params or {}, "sources": {}, "passthrough": passthrough})
        return read_call(self.sock)

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=20)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for s in (self.sock, self.listener):
            s.close()
        if self.proc.stdout:
            self.proc.stdout.close()
        if self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def spawn() -> Iterator[Any]:
    started: List[WorkerProcess] = []

    def start(source: str, **kw: Any) -> WorkerProcess:
        w = WorkerProcess(source, **kw)
        started.append(w)
        return w

    yield start
    for w in started:
        w.close()


def test_worker_process_serves_calls_survives_errors_and_captures_output(spawn: Any) -> None:
    pytest.importorskip("pyarrow")
    w = spawn(FEED_MODULE, memory_mb=4096)
    kind, payload = read_frame(w.sock)  # type: ignore[misc]
    assert kind == HELLO
    hello = json.loads(payload)
    assert hello["pid"] == w.proc.pid and hello["pyarrow"] is True and hello["python"].count(".") == 2
    assert [f["name"] for f in hello["feeds"]] == ["hello", "boom", "chatty", "limits"]
    assert hello["feeds"][0] == {
        "name": "hello", "doc": "Say hello.", "cache": "1m", "key": ["i"],
        "params": [
            {"name": "name", "type": "str", "required": False, "default": "world"},
            {"name": "since", "type": "date", "required": False, "default": "2024-01-01"},
            {"name": "n", "type": "int", "required": False, "default": 2},
        ],
    }

    # A small list result goes as ROWS even with pyarrow: it is ten times cheaper.
    frames = w.call("hello", {"name": "Ada", "since": "2024-02-03"})
    assert [k for k, _ in frames] == [ROWS, END]
    assert frames[0][1]["columns"] == ["i", "name", "since"]
    assert frames[0][1]["types"] == ["int", "str", "date"]
    assert frames[0][1]["rows"] == [[0, "Ada", "2024-02-03"], [1, "Ada", "2024-02-03"]]
    end = frames[1][1]
    assert end["rows"] == 2 and end["stdout"] == "hello Ada\n" and end["stderr"] == "careful\n"
    assert end["duration_ms"] >= 0

    # A bigger one goes as Arrow.
    frames = w.call("hello", {"name": "Bo", "n": 300})
    assert [k for k, _ in frames][-1] == END and {k for k, _ in frames[:-1]} == {ARROW}
    import datetime as dt
    big = arrow_rows([p for k, p in frames if k == ARROW])
    assert len(big) == 300 and big[299] == {"i": 299, "name": "Bo", "since": dt.date(2024, 1, 1)}

    frames = w.call("boom", {"x": 7})
    (kind, err), = frames
    assert kind == ERROR
    assert err["code"] == "feed_raised" and err["type"] == "ValueError" and err["message"] == "bad x 7"
    assert err["stdout"] == "before boom\n"
    tb = err["traceback"]
    assert "my_feeds.py\", line 26, in boom" in tb and "my_feeds.py\", line 20, in helper" in tb, tb
    assert "ValueError: bad x 7" in tb
    assert "_worker.py" not in tb and "sluice" + os.sep not in tb, tb

    # Output printed by the failed call does not leak into the next one.
    frames = w.call("hello", {"n": 1})
    assert frames[-1][0] == END and frames[-1][1]["stdout"] == "hello world\n"

    (kind, end), = w.call("chatty")
    assert kind == END and end["rows"] == 0
    assert end["stdout"].startswith("[... truncated]\n") and end["stdout"].endswith("00019999\n")
    assert 60 * 1024 < len(end["stdout"].encode()) <= 64 * 1024 + 32
    # The worker reuses its capture buffers: the next call sees only its own output, and
    # not the truncation mark.
    end = w.call("hello", {"n": 1})[-1][1]
    assert (end["stdout"], end["stderr"]) == ("hello world\n", "careful\n")

    frames = w.call("limits")
    assert frames[0][0] == ROWS and frames[0][1]["rows"] == [[4096 * 1024 * 1024]]

    write_json(w.sock, SHUTDOWN, {})
    assert w.wait() == 0


def test_worker_process_with_no_third_party_packages_sends_rows_and_exits_when_socket_closes(spawn: Any) -> None:
    w = spawn(FEED_MODULE, no_site=True)
    kind, payload = read_frame(w.sock)  # type: ignore[misc]
    assert kind == HELLO and json.loads(payload)["pyarrow"] is False
    frames = w.call("hello", {"name": "Bo", "since": "2024-05-06", "n": 2})
    assert [k for k, _ in frames] == [ROWS, END]
    assert frames[0][1]["types"] == ["int", "str", "date"]
    assert rows_rows([frames[0][1]]) == [{"i": 0, "name": "Bo", "since": "2024-05-06"}, {"i": 1, "name": "Bo", "since": "2024-05-06"}]
    w.sock.close()
    assert w.wait() == 0


def load_error(spawn: Any, source: str) -> Dict[str, Any]:
    w = spawn(source)
    frame = read_frame(w.sock)
    assert frame is not None, w.proc.stderr.read().decode()
    kind, payload = frame
    assert kind == LOAD_ERROR, payload
    err = json.loads(payload)
    assert err["code"] == "invalid_feed_module"
    assert w.wait() == 1
    err["_module"] = w.module
    return err


def test_load_error_for_syntax_error_points_at_the_line(spawn: Any) -> None:
    err = load_error(spawn, """\
        import sluice

        @sluice.feed
        def broken():
            return [{"a": 1}
        """)
    assert err["file"] == err["_module"]
    assert err["line"] == 5
    assert f"{err['_module']}:5: syntax error" in err["message"] and "fix the syntax" in err["message"]


def test_load_error_for_missing_import_says_to_add_the_dependency(spawn: Any) -> None:
    err = load_error(spawn, """\
        import sluice
        import datetime
        import no_such_package_xyz.sub

        @sluice.feed
        def f():
            return []
        """)
    assert err["line"] == 3 and err["file"] == err["_module"]
    assert "cannot import 'no_such_package_xyz'" in err["message"]
    assert "add 'no_such_package_xyz' to the dependencies in the '# /// script' block" in err["message"]
    assert "ModuleNotFoundError" in err["traceback"]


def test_load_error_for_exception_at_import_and_bad_signature_and_no_feeds(spawn: Any) -> None:
    err = load_error(spawn, """\
        import sluice

        LOOKUP = {}
        VALUE = LOOKUP["missing"]
        """)
    assert err["line"] == 4 and "raised KeyError" in err["message"] and "move work that can fail into the feed function" in err["message"]

    err = load_error(spawn, """\
        import sluice

        @sluice.feed
        def f(a: int,
              b: set = None):
            return []
        """)
    assert err["line"] == 5 and err["file"] == err["_module"] and "parameter 'b'" in err["message"]

    err = load_error(spawn, "import sluice\n\ndef not_a_feed():\n    return []\n")
    assert err["file"] == err["_module"] and err["line"] is None
    assert "defines no feed" in err["message"] and "@sluice.feed" in err["message"] and err["_module"] in err["message"]


def test_a_feed_file_named_like_a_module_does_not_shadow_it(spawn: Any) -> None:
    w = spawn("import json\nimport sluice\n\n@sluice.feed\ndef f():\n    return [{'x': json.dumps([1])}]\n", filename="sluice.py")
    kind, payload = read_frame(w.sock)  # type: ignore[misc]
    assert kind == HELLO, payload
    assert [f["name"] for f in json.loads(payload)["feeds"]] == ["f"]
    frames = w.call("f")
    assert frames[-1][0] == END and frames[-1][1]["rows"] == 1


def test_generator_failing_midway_sends_its_rows_then_error_and_bad_sql_is_a_source_error(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_encode, "STREAM_CHUNK_ROWS", 2)

    @sluice.feed
    def flaky():
        for i in range(3):
            yield {"i": i}
        raise RuntimeError("upstream went away")

    @sluice.feed
    def bad_sql():
        return sluice.sql("shop", "select nope from sales where region = :r", r="EU")

    sock, thread, _ = serve_in_thread(False, monkeypatch)
    read_frame(sock)
    write_json(sock, CALL, {"id": "1", "feed": "flaky", "params": {}, "sources": {}, "passthrough": True})
    frames = read_call(sock)
    assert [k for k, _ in frames] == [ROWS, ERROR]
    assert rows_rows([frames[0][1]]) == [{"i": 0}, {"i": 1}]
    assert frames[1][1]["code"] == "feed_raised" and frames[1][1]["message"] == "upstream went away"
    assert "in flaky" in frames[1][1]["traceback"]

    sources = {"shop": {"kind": "sqlite", "path": str(shop)}}
    write_json(sock, CALL, {"id": "2", "feed": "bad_sql", "params": {}, "sources": sources, "passthrough": False})
    (kind, err), = read_call(sock)
    assert kind == ERROR and err["code"] == "source_query_failed" and err["type"] == "OperationalError"
    assert "no such column: nope" in err["message"]
    sock.close()
    thread.join(5)


def test_quick_results_wait_for_a_call_already_queued_but_never_for_one_not_sent() -> None:
    @sluice.feed
    def echo(i: int = 0):
        return [{"i": i}]

    ours, theirs = socket.socketpair()
    writes: List[int] = []

    class Counting:
        """The worker's socket, counting its writes."""

        def recv(self, n: int) -> bytes:
            return theirs.recv(n)

        def sendall(self, b: bytes) -> None:
            writes.append(len(b))
            theirs.sendall(b)

    worker = _worker.Worker(_worker.Connection(Counting()), sluice.feeds())  # type: ignore[arg-type]
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    ours.settimeout(5)
    read_frame(ours)  # HELLO

    # A lone call is answered while the worker waits for the next: nothing is held back
    # without a next call already in the socket.
    write_json(ours, CALL, {"feed": "echo", "params": {"i": 1}, "sources": {}, "passthrough": True})
    frames = read_call(ours)
    assert rows_rows([frames[0][1]]) == [{"i": 1}]
    assert len(writes) == 2, "HELLO, then the call's ROWS and END in one write"

    # Two calls in the socket at once (the runtime queues one behind a busy worker): both
    # answers, in order, leave in one write.
    calls = [json.dumps({"feed": "echo", "params": {"i": i}, "sources": {}, "passthrough": True}).encode() for i in (2, 3)]
    ours.sendall(b"".join(
        (len(c) + 1).to_bytes(4, "big") + bytes([CALL]) + c for c in calls))
    got = [read_call(ours), read_call(ours)]
    assert [rows_rows([f[0][1]]) for f in got] == [[{"i": 2}], [{"i": 3}]]
    assert len(writes) == 3, f"both answers in one write, not {len(writes) - 2}"

    write_json(ours, SHUTDOWN, {})
    thread.join(5)
    ours.close()
    theirs.close()


def test_a_quick_result_does_not_wait_behind_a_slow_feed() -> None:
    @sluice.feed
    def quick(i: int = 0):
        return [{"i": i}]

    @sluice.feed
    def slow():
        import time
        time.sleep(0.05)
        return [{"i": -1}]

    ours, theirs = socket.socketpair()
    sent: List[float] = []

    class Timed:
        """The worker's socket, noting when each write leaves."""

        def recv(self, n: int) -> bytes:
            return theirs.recv(n)

        def sendall(self, b: bytes) -> None:
            import time
            sent.append(time.perf_counter())
            theirs.sendall(b)

    worker = _worker.Worker(_worker.Connection(Timed()), sluice.feeds())  # type: ignore[arg-type]
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    ours.settimeout(5)
    read_frame(ours)  # HELLO
    for feed in ("quick", "slow"):  # each feed's last duration is now known
        write_json(ours, CALL, {"feed": feed, "params": {}, "sources": {}, "passthrough": True})
        read_call(ours)
    calls = [json.dumps({"feed": f, "params": {}, "sources": {}, "passthrough": True}).encode() for f in ("quick", "slow")]
    ours.sendall(b"".join((len(c) + 1).to_bytes(4, "big") + bytes([CALL]) + c for c in calls))
    got = [read_call(ours), read_call(ours)]
    assert [rows_rows([f[0][1]]) for f in got] == [[{"i": 0}], [{"i": -1}]]
    assert len(sent) == 5, "the quick answer left on its own, before the slow call ran"
    assert sent[4] - sent[3] >= 0.04, "the quick answer was held while the slow feed ran"

    write_json(ours, SHUTDOWN, {})
    thread.join(5)
    ours.close()
    theirs.close()
