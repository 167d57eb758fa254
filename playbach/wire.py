"""The control socket's wire format, shared by its two ends (the player's device/control.py and
`playbach web`'s web/link.py): one JSON object per line, UTF-8, each way (docs/control.md).

The limits are part of the protocol: a request line longer than MAX_REQUEST bytes is refused
and the connection closed (a client cannot make the player buffer without bound); replies and
frames are not limited here, the reader of each end bounds what it keeps (MAX_REPLY).
"""
from __future__ import annotations

import json
from typing import Any

DEFAULT_SOCKET = "/run/playbach/control.sock"
MAX_REQUEST = 8192            # bytes of one request line, newline included
MAX_REPLY = 4 * 1024 * 1024   # bytes of one reply line the web's client reads (a long take)
MAX_CLIENTS = 8               # connections the player serves at once; more are told so and closed
OPS = ("status", "set", "pause", "play", "panic", "restart", "take", "subscribe", "unsubscribe")


def encode(message: dict[str, Any]) -> bytes:
    """One message as its line: compact JSON and a newline (NaN/Infinity refused: not JSON)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One line as a message; ValueError saying what is wrong with it."""
    try:
        message = json.loads(line, parse_constant=_not_json)   # NaN echoed in an id could not be encoded back
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not JSON ({e})") from e
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    return message


def _not_json(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)
