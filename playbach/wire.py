"""The control socket's wire format, shared by its two ends (the player's device/control.py and
`playbach web`'s web/link.py): one JSON object per line, UTF-8, each way (docs/control.md).

The limits are part of the protocol: a request line longer than MAX_REQUEST bytes is refused
and the connection closed (a client cannot make the player buffer without bound); replies and
frames are not limited here, the reader of each end bounds what it keeps (MAX_REPLY).
"""
from __future__ import annotations

import json
import math
import socket
import struct
from typing import Any

DEFAULT_SOCKET = "/run/playbach/control.sock"
MAX_REQUEST = 8192            # bytes of one request line, newline included
MAX_REPLY = 4 * 1024 * 1024   # bytes of one reply line the web's client reads (a long take)
MAX_CLIENTS = 8               # connections the player serves at once; more are told so and closed
MAX_DEPTH = 32                # nesting of arrays and objects in one message
OPS = ("status", "settings", "set", "pause", "play", "panic", "restart", "reset", "take", "subscribe", "unsubscribe")


def connect(path: str, timeout: float) -> socket.socket:
    """A blocking socket connected to the player at `path`. A full listening queue (a stranger's
    connect storm) is waited out in the kernel, in turn with other waiters, for up to `timeout`
    seconds (SO_SNDTIMEO bounds a Unix connect); a non-blocking connect, Python's with a timeout
    or asyncio's, fails at once with EAGAIN there, or asyncio's seems connected and is not.
    OSError (EAGAIN after `timeout`) when no place came."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    seconds = max(timeout, 0.001)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("@ll", int(seconds), int(seconds % 1 * 1e6)))
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def encode(message: dict[str, Any]) -> bytes:
    """One message as its line: compact JSON and a newline (NaN/Infinity refused: not JSON)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One line as a message; ValueError saying what is wrong with it. Only what encode() can
    write back is accepted (a request's `id` is echoed): no NaN, no number beyond a float, no
    nesting deeper than MAX_DEPTH (json's recursion would end the reader, not the request)."""
    try:
        message = json.loads(line, parse_constant=_not_json, parse_float=_finite)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as e:   # JSONDecodeError, and int's digit limit
        raise ValueError(f"not JSON ({e})") from e
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    if depth(message) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    return message


def depth(value: Any) -> int:
    """How deeply arrays and objects nest in `value` (a scalar: 0), counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def _not_json(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a JSON number", name, 0)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise json.JSONDecodeError(f"{text} is out of range", text, 0)
    return value
