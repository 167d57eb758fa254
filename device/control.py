"""The player's control socket (`control_socket`, default /run/playbach/control.sock): a Unix
socket speaking one JSON object per line (playbach/wire.py; the protocol: docs/control.md).

Why no thread: a control thread holds Python's GIL while it parses and encodes, and the loop,
waking for a note, would wait for it (docs/control.md has the measurement). Here the play loop
owns everything: between notes it
waits in select() on the sockets instead of sleeping (Player._wait), so a request wakes it, and
serve() does a piece of work (read the sockets, answer a request, make a frame, encode 500 notes
of a take) only while the next note is further away than twice the slowest recent piece of that
kind, as the loop does for model steps. A request that does not fit waits for after the note.

Bounded everywhere: MAX_CLIENTS connections, MAX_REQUEST bytes a line, LINES_PER_PASS lines
parsed per client per pass, PER_CLIENT requests in flight each, QUEUE in all (more: 'busy' at
once), PER_PASS answered per pass, MAX_OUTBUF bytes waiting per client (a subscriber that stops
reading misses frames; one that lets a reply pile up is dropped). Against a hostile local client
(control_guard.py): slots kept for the web service, a share of the loop's time, hang-ups.

The socket is never world-writable: 0660 with group `control_group` where that group exists and
the player is in it (the installed service), else 0600 (only the player's own user).
"""
from __future__ import annotations

import logging
import os
import selectors
import time
from collections import deque
from pathlib import Path
from typing import Any

from playbach import wire
from playbach.device import control_guard as guard
from playbach.device.control_guard import Conn
from playbach.device.control_ops import Controlled, Ops, TakeJob
from playbach.device.unix_socket import BACKLOG, bind
from playbach.errors import UserError

log = logging.getLogger(__name__)

QUEUE = 32            # requests waiting for the loop, all clients together
PER_CLIENT = 8        # requests in flight per connection (the web pipelines its calls)
PER_PASS = 4          # requests answered per loop pass (the loop sends what is due in between)
LINES_PER_PASS = 16   # request lines parsed per connection per pass (a flood waits in its socket)
MAX_OUTBUF = 8 * 1024 * 1024
FRAME_OUTBUF = 256 * 1024   # above this a subscriber gets no new frame until it has read
FRAME_EVERY = 0.1           # seconds between the stream's frames (at most 10 a second)
FIRST_COST = 0.002          # seconds assumed for a kind of work not yet timed
MIN_COST = 0.0002           # the least a piece of work is assumed to take
COST_HALF_LIFE = 1.0        # seconds in which a kind's slowest recent time halves while none is done
SELECT_FDS = 1024           # select() cannot watch a descriptor from FD_SETSIZE up: refused as busy


def open_control(path: str, group: str, player: Controlled) -> "ControlServer | None":
    """The control socket at `path` (control_socket), or None: '' turns it off, and so does the
    default path when its folder is missing (a desktop run; the service's RuntimeDirectory= makes
    it). A path that was asked for and cannot be made is a UserError naming it."""
    if not path:
        return None
    if path == wire.DEFAULT_SOCKET and not Path(path).parent.is_dir():
        log.info("no control socket: %s does not exist (playbach.service makes it)", Path(path).parent)
        return None
    return ControlServer(path, group, player)


class ControlServer:
    """The socket and its clients, served by the play loop: serve() every pass, wait() between
    notes, each piece of work only where it fits before the next note (room())."""

    def __init__(self, path: str, group: str, player: Controlled):
        self.path = path
        self.listener = bind(path, group)
        self.inode = os.stat(path).st_ino
        self.ops = Ops(player)
        self.waiting: deque[tuple[Conn, dict]] = deque()   # parsed, not yet answered: QUEUE at most
        self.takes: deque[TakeJob] = deque()
        self.cost: dict[str, tuple[float, float]] = {}   # kind of work -> (the slowest recent one, s; when)
        self.subscribers = 0
        self.next_frame = 0.0
        self.conns: dict[int, Conn] = {}
        self.backlog: dict[Conn, None] = {}   # clients with whole lines left in their inbuf, in turn
        self.budget, self.refusals = guard.Budget(), guard.Refusals()
        self.turn, self.idle_checked = 0, 0.0
        self.numbers = iter(range(1, 1 << 62))
        self.more = False   # serve() stopped at a per-pass limit, not for want of room: come back at once
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)   # Player.panic() from elsewhere
        # select(), not the default epoll: epoll's and poll's timeouts are whole milliseconds rounded
        # up, select()'s are microseconds, like the Event wait it stands in for; with MAX_CLIENTS + 2
        # descriptors its cost is nothing
        self.sel = selectors.SelectSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, "listen")
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.closed = False

    # --- the loop's side ------------------------------------------------------------------------
    def room(self, now: float, deadline: float | None, kind: str = "io") -> bool:
        """Whether `kind` of work begun now ends well before `deadline` (the next note; None: none
        due): twice the slowest recent one of its kind, as Player._room_to_generate does for steps."""
        return self.budget.left(now) > 0 and (deadline is None or deadline - now > 2 * self._cost(kind, now))

    def _cost(self, kind: str, now: float) -> float:
        """The slowest recent piece of `kind`, halved for every COST_HALF_LIFE since it was timed.
        One stall should not keep that kind out for long, so it decays with time, not only with
        each piece done: a piece that does not fit is not done, so a decay per piece would keep
        a stall's cost for as long as the notes came closer than twice it."""
        if kind not in self.cost:
            return FIRST_COST
        cost, when = self.cost[kind]
        return max(cost * 0.5 ** (max(now - when, 0.0) / COST_HALF_LIFE), MIN_COST)

    def _took(self, kind: str, since: float) -> float:
        now = time.monotonic()
        self.cost[kind] = (max(now - since, 0.99 * self._cost(kind, now), MIN_COST), now)
        return now

    def serve(self, now: float, deadline: float | None) -> None:
        """The control work that fits before `deadline`: read the sockets, answer up to PER_PASS
        requests, a piece of a take, a frame when one is due."""
        self.more = False
        if self.closed or not self.room(now, deadline):
            return
        began = time.monotonic()
        self._io(now, began + min(guard.PASS_SECONDS, self.budget.left(now),
                                float("inf") if deadline is None else (deadline - now) / 2))
        t = self._took("io", now)
        t = self._requests(t, deadline)
        if self.takes and self.room(t, deadline, "take"):
            job = self.takes[0]
            line = job.step()
            t = self._took("take", t)
            if line is not None:
                self.takes.popleft()
                if job.conn.number in self.conns:
                    self._send(job.conn, line)
            self.more = self.more or bool(self.takes)
        if self.subscribers and now >= self.next_frame and self.room(t, deadline, "frame"):
            self.next_frame = now + FRAME_EVERY
            line = wire.encode(self.ops.frame(t))
            for conn in list(self.conns.values()):
                if conn.subscribed and len(conn.outbuf) < FRAME_OUTBUF:
                    self._send(conn, line)
            t = self._took("frame", t)
        self.more = self.more or bool(self.backlog)
        self.budget.spend(t - began, t)
        self.refusals.log(t)
        if t - self.idle_checked >= 1.0:
            self._hang_up_silent(t)

    def _io(self, now: float, stop: float) -> None:
        """Accept, read and parse until `stop`: the readable clients and those with lines left,
        each in turn (the ones not reached come first next pass)."""
        events = self.sel.select(0)
        self.turn += 1
        turn = self.turn % max(len(events), 1)
        for key, mask in events[turn:] + events[:turn]:
            if key.data == "listen":
                self._accept(now, stop)
            elif key.data == "wake":
                try:
                    os.read(self.wake_r, 4096)
                except BlockingIOError:
                    pass
            else:
                if time.monotonic() >= stop:
                    self.more = True
                    continue   # select() reports it again next pass
                if mask & selectors.EVENT_READ:
                    self._read(key.data, now)
                if mask & selectors.EVENT_WRITE and key.data.number in self.conns:
                    self._flush(key.data)
        for conn in list(self.backlog):
            if time.monotonic() >= stop:
                break
            self._parse(conn)
            if conn in self.backlog:   # lines still left: its next turn after the others'
                del self.backlog[conn]
                self.backlog[conn] = None

    def _requests(self, t: float, deadline: float | None) -> float:
        """Answer up to PER_PASS waiting requests, each only where it fits."""
        for _ in range(PER_PASS):
            if not self.waiting or not self.room(t, deadline, self.waiting[0][1]["op"]):
                return t
            conn, message = self.waiting.popleft()
            conn.pending -= 1
            self._answer(conn, message, t)   # also for a client gone: a `set` sent and hung up on holds
            t = self._took(message["op"], t)
        self.more = self.more or bool(self.waiting)
        return t

    def _hang_up_silent(self, now: float) -> None:
        """A stranger that sent nothing for IDLE_SECONDS frees its slot (the web's link may idle)."""
        self.idle_checked = now
        for conn in list(self.conns.values()):
            if not conn.trusted and now - conn.heard > guard.IDLE_SECONDS:
                self._refuse(conn, f"idle for {guard.IDLE_SECONDS:g} s; hung up", close=True, bad=False)

    def _answer(self, conn: Conn, message: dict, now: float) -> None:
        extra = {"id": message["id"]} if "id" in message else {}
        if message["op"] == "take":
            try:
                head, notes, first = self.ops.take_window(message, now)
            except UserError as e:
                self._reply(conn, {"ok": False, "error": str(e), **extra})
                return
            self.takes.append(TakeJob(conn, head, notes, first, extra))
            return
        self._reply(conn, {**self.ops.handle(message, now), **extra})

    def wait(self, timeout: float) -> None:
        """Sleep up to `timeout` (the loop's next wake), woken by a client or Player.panic();
        not at all when serve() left work it could do."""
        if not self.more and not self.closed:
            self.sel.select(timeout)

    def wake(self) -> None:
        """Wake the loop from wait() (Player.panic(), from any thread)."""
        if self.closed:
            return
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass   # the pipe is full: the loop wakes anyway

    # --- the sockets ----------------------------------------------------------------------------
    def _accept(self, now: float, stop: float) -> None:
        """The listening queue's connections, all of them (BACKLOG at most) while the pass has time:
        one a pass would leave a connect storm's queue full, and a fresh connect from the page
        would then race the storm for each place freed."""
        for _ in range(BACKLOG):
            if not self._accept_one(now) or time.monotonic() >= stop:
                return

    def _accept_one(self, now: float) -> bool:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, OSError):
            return False
        sock.setblocking(False)
        trusted = guard.trusted(sock)
        strangers = sum(not c.trusted for c in self.conns.values())
        limit = wire.MAX_CLIENTS if trusted else wire.MAX_CLIENTS - guard.TRUSTED_SLOTS
        if len(self.conns) >= wire.MAX_CLIENTS or sock.fileno() >= SELECT_FDS or (not trusted and strangers >= limit):
            try:   # a best-effort word, then gone: the limit holds whatever the client does
                sock.send(wire.encode({"ok": False, "error": f"busy: {limit} clients already"}))
            except OSError:
                pass
            sock.close()
            return True
        conn = Conn(sock, next(self.numbers), trusted, now)
        self.conns[conn.number] = conn
        self.sel.register(sock, selectors.EVENT_READ, conn)
        return True

    def _read(self, conn: Conn, now: float) -> None:
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
        conn.heard = now
        self._parse(conn)

    def _parse(self, conn: Conn) -> None:
        """Up to LINES_PER_PASS of its lines; with more left, stop reading it until they are done."""
        for _ in range(LINES_PER_PASS):
            if conn.closing or conn.number not in self.conns:
                break
            end = conn.inbuf.find(b"\n")
            if end < 0:
                if len(conn.inbuf) >= wire.MAX_REQUEST:
                    self._refuse(conn, f"request longer than {wire.MAX_REQUEST} bytes", close=True)
                break
            line = bytes(conn.inbuf[:end])
            del conn.inbuf[:end + 1]
            if len(line) >= wire.MAX_REQUEST:
                self._refuse(conn, f"request longer than {wire.MAX_REQUEST} bytes", close=True)
                break
            if line.strip():
                self._request(conn, line)
        left = b"\n" in conn.inbuf and not conn.closing and conn.number in self.conns
        if left != (conn in self.backlog):
            conn.reading = not left
            if left:
                self.backlog[conn] = None
            else:
                self.backlog.pop(conn, None)
            self._watch(conn)

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
            return
        conn.bad = 0
        if op in ("subscribe", "unsubscribe"):   # served here: the frames go to every subscriber
            wanted = op == "subscribe"
            if conn.subscribed != wanted:
                conn.subscribed = wanted
                self.subscribers += 1 if wanted else -1
            self._reply(conn, {"ok": True, **extra})
        elif conn.pending >= PER_CLIENT:
            self._refuse(conn, f"busy: {PER_CLIENT} requests of this client already waiting", bad=False, **extra)
        elif len(self.waiting) >= QUEUE:
            self._refuse(conn, "busy: the player has too many requests waiting", bad=False, **extra)
        else:
            self.waiting.append((conn, message))
            conn.pending += 1

    def _refuse(self, conn: Conn, error: str, close: bool = False, bad: bool = True, **extra: Any) -> None:
        """Say why; a malformed request (`bad`) is counted, and the BAD_IN_A_ROW-th is hung up on."""
        if bad:
            conn.bad += 1
            self.refusals.note(conn.number, error, time.monotonic())
            if conn.bad >= guard.BAD_IN_A_ROW and not close:
                error, close = f"{error}; hung up after {conn.bad} malformed requests in a row", True
            self.refusals.hung_up += close
        conn.closing = conn.closing or close   # first: the flush in _send closes once all is written
        self._reply(conn, {"ok": False, "error": error, **extra})

    def _reply(self, conn: Conn, message: dict) -> None:
        if conn.number not in self.conns:
            return
        try:
            line = wire.encode(message)
        except (TypeError, ValueError) as e:   # a bug: say so rather than end the take
            line = wire.encode({"ok": False, "error": f"reply not encodable: {e}"})
        self._send(conn, line)

    def _send(self, conn: Conn, line: bytes) -> None:
        conn.outbuf += line
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
        self._watch(conn)

    def _watch(self, conn: Conn) -> None:
        """Select on what the client needs: reading unless it has lines left, writing while its outbuf is not empty."""
        want = (selectors.EVENT_READ if conn.reading else 0) | (selectors.EVENT_WRITE if conn.outbuf else 0)
        key = self.sel.get_map().get(conn.sock)
        if key is None:
            if want:
                self.sel.register(conn.sock, want, conn)
        elif not want:
            self.sel.unregister(conn.sock)
        elif key.events != want:
            self.sel.modify(conn.sock, want, conn)

    def _drop(self, conn: Conn) -> None:
        if self.conns.pop(conn.number, None) is None:
            return
        self.backlog.pop(conn, None)
        if conn.subscribed:
            self.subscribers -= 1
        if conn.sock in self.sel.get_map():
            self.sel.unregister(conn.sock)
        conn.sock.close()

    # --- closing --------------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        log.info("control socket: slowest recent work (ms): %s",
                 ", ".join(f"{k} {v * 1e3:.3f}" for k, (v, _) in sorted(self.cost.items())) or "none")
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
