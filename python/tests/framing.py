"""A tiny, independent codec for the worker protocol, used by the tests to check what the
SDK sends. Written from docs/worker-protocol.md, not from sluice's own code, so that a
mistake in the SDK's framing cannot hide itself."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any, Dict, List, Optional, Tuple

HELLO, LOAD_ERROR, CALL, SQL, ARROW, ROWS, END, ERROR, SHUTDOWN = 1, 2, 3, 4, 5, 6, 7, 8, 9


def write_frame(sock: socket.socket, kind: int, payload: bytes) -> None:
    sock.sendall(struct.pack(">I", len(payload) + 1) + bytes([kind]) + payload)


def write_json(sock: socket.socket, kind: int, obj: Any) -> None:
    write_frame(sock, kind, json.dumps(obj).encode())


def _exact(sock: socket.socket, n: int) -> Optional[bytes]:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_frame(sock: socket.socket) -> Optional[Tuple[int, bytes]]:
    head = _exact(sock, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    body = _exact(sock, n)
    assert body is not None, "socket closed in the middle of a frame"
    return body[0], body[1:]


def read_call(sock: socket.socket) -> List[Tuple[int, Any]]:
    """All frames of one call, up to and including END or ERROR; JSON payloads decoded."""
    out: List[Tuple[int, Any]] = []
    while True:
        f = read_frame(sock)
        assert f is not None, f"worker closed the socket mid-call after {out}"
        kind, payload = f
        out.append((kind, payload if kind == ARROW else json.loads(payload)))
        if kind in (END, ERROR):
            return out


def arrow_rows(payloads: List[bytes]) -> List[Dict[str, Any]]:
    """Rows from ARROW frame payloads, each decoded as a complete IPC stream."""
    import pyarrow as pa

    rows: List[Dict[str, Any]] = []
    for p in payloads:
        rows.extend(pa.ipc.open_stream(pa.py_buffer(p)).read_all().to_pylist())
    return rows


def rows_rows(payloads: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Rows from ROWS frame payloads (a later frame may carry more columns)."""
    rows: List[Dict[str, Any]] = []
    for p in payloads:
        assert len(p["columns"]) == len(p["types"])
        for r in p["rows"]:
            assert len(r) == len(p["columns"])
            rows.append(dict(zip(p["columns"], r)))
    return rows
