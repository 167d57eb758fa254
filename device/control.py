"""The player's control socket (`control_socket`, default /run/playbach/control.sock): a Unix
socket speaking one JSON object per line (playbach/wire.py; the protocol: docs/control.md).

Why a thread and a queue: the play loop must never wait on a client. A small thread owns the
sockets (a selector: accept, read, write, all non-blocking) and only parses; what reads or
changes the take goes through a bounded queue that the loop drains, a few requests a pass, in
its own thread (Player.apply() must run there: the loop reads what it changes without a lock).
Replies and the stream's frames go back the other way as plain Python objects, and the thread
encodes them. Bounded everywhere: MAX_CLIENTS connections, MAX_REQUEST bytes a line, PER_CLIENT
requests in flight each, QUEUE in all (more: 'busy' at once), MAX_OUTBUF bytes waiting per
client (a subscriber that stops reading misses frames; one that lets a reply pile up is dropped).

The socket is never world-writable: 0660 with group `control_group` where that group exists and
the player is in it (the installed service), else 0600 (only the player's own user).
"""
from __future__ import annotations

import grp
import logging
import os
import queue
import selectors
import socket
import stat
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any

from playbach import wire
from playbach.device.control_ops import Ops
from playbach.errors import UserError

log = logging.getLogger(__name__)

QUEUE = 32            # requests waiting for the loop, all clients together
PER_CLIENT = 8        # requests in flight per connection (the web pipelines its calls)
PER_PASS = 4          # requests the loop answers per pass (its work per pass stays small)
MAX_OUTBUF = 8 * 1024 * 1024
FRAME_OUTBUF = 256 * 1024   # above this a subscriber gets no new frame until it has read
FRAME_EVERY = 0.1           # seconds between the stream's frames
BACKLOG = 16
SWITCH_INTERVAL = 0.0005   # seconds: Python's GIL hand-over when the loop waits for it


def open_control(player: Any) -> "ControlServer | None":
    """The control socket the settings ask for, or None: '' turns it off, and so does the default
    path when its folder is missing (a desktop run; the service's RuntimeDirectory= makes it).
    A path that was asked for and cannot be made is a UserError naming it."""
    path, group = player.s["control_socket"], player.s["control_group"]
    if not path:
        return None
    if path == wire.DEFAULT_SOCKET and not Path(path).parent.is_dir():
        log.info("no control socket: %s does not exist (playbach.service makes it)", Path(path).parent)
        return None
    return ControlServer(path, group, player)


def bind(path: str, group: str) -> socket.socket:
    """A listening Unix socket at `path`, 0660 to `group` if we may, else 0600; a stale socket
    file (no one listening) is replaced, a live one or any other file is refused."""
    where = f"control_socket {path}"
    p = Path(path)
    if not p.parent.is_dir():
        raise UserError(f"{where}: folder {p.parent} does not exist")
    if p.is_symlink() or p.exists():
        if not stat.S_ISSOCK(p.lstat().st_mode):
            raise UserError(f"{where}: exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            raise UserError(f"{where}: another player is listening there")
        except (ConnectionRefusedError, FileNotFoundError):
            p.unlink(missing_ok=True)   # left by a player that was killed
        except PermissionError as e:
            raise UserError(f"{where}: cannot replace it ({e.strerror})") from e
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)   # born 0600: never a moment when others could connect
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        raise UserError(f"{where}: cannot create the socket ({e.strerror})") from e
    finally:
        os.umask(old)
    mode = 0o600
    try:
        gid = grp.getgrnam(group).gr_gid if group else None
    except KeyError:
        gid = None
    if gid is not None:
        try:
            os.chown(path, -1, gid)
            mode = 0o660
        except PermissionError:
            log.warning("control socket: not in group %s; only this user may connect", group)
    os.chmod(path, mode)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    log.info("control socket %s (mode %o%s)", path, mode, f", group {group}" if mode == 0o660 else "")
    return sock



class Conn:
    def __init__(self, sock: socket.socket, number: int):
        self.sock, self.number = sock, number
        self.inbuf, self.outbuf = bytearray(), bytearray()
        self.pending = 0
        self.subscribed = False
        self.closing = False   # close once the outbuf is written


class ControlServer:
    """The socket, its thread, and serve(now), which the play loop calls every pass."""

    def __init__(self, path: str, group: str, player: Any):
        self.path = path
        self.listener = bind(path, group)
        self.inode = os.stat(path).st_ino
        self.ops = Ops(player)
        self.requests: queue.Queue = queue.Queue(QUEUE)
        self.replies: deque = deque()            # (conn number, message), loop -> thread
        self.frame: dict | None = None           # the newest frame, loop -> thread
        self.subscribers = 0                     # read by the loop, written by the thread
        self.next_frame = 0.0
        self.conns: dict[int, Conn] = {}
        self.numbers = iter(range(1, 1 << 62))
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, "listen")
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.closed = False
        # The thread holds the GIL while it parses and encodes; the loop, waking from its sleep,
        # would wait up to the switch interval (5 ms by default) for it: measured as a 2.4 ms
        # onset p99 (bench/web.py). A 0.5 ms interval bounds that wait.
        sys.setswitchinterval(SWITCH_INTERVAL)
        self.thread = threading.Thread(target=self._run, name="control", daemon=True)
        self.thread.start()

    # --- the loop's side ------------------------------------------------------------------------
    def serve(self, now: float) -> None:
        """Answer up to PER_PASS waiting requests and publish a frame when one is due."""
        self.ops.collect(now)
        answered = False
        for _ in range(PER_PASS):
            try:
                number, message = self.requests.get_nowait()
            except queue.Empty:
                break
            reply = self.ops.handle(message, now)
            if "id" in message:
                reply["id"] = message["id"]
            self.replies.append((number, reply))
            answered = True
        if self.subscribers and now >= self.next_frame:
            self.next_frame = now + FRAME_EVERY
            self.frame = self.ops.frame(now)
            answered = True
        if answered:
            self._wake()

    def _wake(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass   # the pipe is full: the thread is awake anyway

    # --- the thread's side ----------------------------------------------------------------------
    def _run(self) -> None:
        while not self.closed:
            try:
                events = self.sel.select(timeout=1.0)
            except OSError:
                return   # closed under us
            for key, mask in events:
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    try:
                        os.read(self.wake_r, 4096)
                    except BlockingIOError:
                        pass
                else:
                    conn = key.data
                    if mask & selectors.EVENT_READ:
                        self._read(conn)
                    if mask & selectors.EVENT_WRITE and conn.number in self.conns:
                        self._flush(conn)
            self._deliver()

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, OSError):
            return
        sock.setblocking(False)
        if len(self.conns) >= wire.MAX_CLIENTS:
            try:   # a best-effort word, then gone: the limit holds whatever the client does
                sock.send(wire.encode({"ok": False, "error": f"busy: {wire.MAX_CLIENTS} clients already"}))
            except OSError:
                pass
            sock.close()
            return
        conn = Conn(sock, next(self.numbers))
        self.conns[conn.number] = conn
        self.sel.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.inbuf += data
        while not conn.closing:
            end = conn.inbuf.find(b"\n")
            if end < 0:
                if len(conn.inbuf) >= wire.MAX_REQUEST:
                    self._refuse(conn, f"request longer than {wire.MAX_REQUEST} bytes", close=True)
                return
            line = bytes(conn.inbuf[:end])
            del conn.inbuf[:end + 1]
            if len(line) >= wire.MAX_REQUEST:
                self._refuse(conn, f"request longer than {wire.MAX_REQUEST} bytes", close=True)
                return
            if line.strip():
                self._request(conn, line)

    def _request(self, conn: Conn, line: bytes) -> None:
        try:
            message = wire.decode(line)
        except ValueError as e:
            self._refuse(conn, str(e))
            return
        op = message.get("op")
        extra = {"id": message["id"]} if "id" in message else {}
        if op not in wire.OPS:
            self._refuse(conn, f"unknown op {op!r}; ops: {', '.join(wire.OPS)}", **extra)
        elif op == "subscribe":   # the thread's own business: the loop only makes frames
            if not conn.subscribed:
                conn.subscribed = True
                self.subscribers += 1
            self._send(conn, {"ok": True, **extra})
        elif conn.pending >= PER_CLIENT:
            self._refuse(conn, f"busy: {PER_CLIENT} requests of this client already waiting", **extra)
        else:
            try:
                self.requests.put_nowait((conn.number, message))
                conn.pending += 1
            except queue.Full:
                self._refuse(conn, "busy: the player has too many requests waiting", **extra)

    def _refuse(self, conn: Conn, error: str, close: bool = False, **extra: Any) -> None:
        conn.closing = conn.closing or close   # first: the flush in _send closes once all is written
        self._send(conn, {"ok": False, "error": error, **extra})

    def _deliver(self) -> None:
        while self.replies:
            number, reply = self.replies.popleft()
            conn = self.conns.get(number)
            if conn is not None:
                conn.pending -= 1
                self._send(conn, reply)
        frame, self.frame = self.frame, None
        if frame is not None:
            line = wire.encode(frame)
            for conn in list(self.conns.values()):
                if conn.subscribed and len(conn.outbuf) < FRAME_OUTBUF:
                    self._send(conn, line)

    def _send(self, conn: Conn, message: dict | bytes) -> None:
        conn.outbuf += message if isinstance(message, bytes) else wire.encode(message)
        if len(conn.outbuf) > MAX_OUTBUF:
            log.warning("control socket: a client does not read its replies; dropped")
            self._drop(conn)
            return
        self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbuf)
            del conn.outbuf[:sent]
        except BlockingIOError:
            pass
        except OSError:
            self._drop(conn)
            return
        if conn.closing and not conn.outbuf:
            self._drop(conn)
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
        if self.sel.get_key(conn.sock).events != want:
            self.sel.modify(conn.sock, want, conn)

    def _drop(self, conn: Conn) -> None:
        if self.conns.pop(conn.number, None) is None:
            return
        if conn.subscribed:
            self.subscribers -= 1
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    # --- closing --------------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake()
        self.thread.join(2.0)
        for conn in list(self.conns.values()):
            self._drop(conn)
        self.sel.close()
        self.listener.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        try:   # only our own socket: a successor may have bound the path already
            if os.lstat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass

    def __enter__(self) -> "ControlServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

