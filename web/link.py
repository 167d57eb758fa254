"""The web service's one connection to the player's control socket (asyncio).

One connection carries the requests (pipelined, matched by id, at most IN_FLIGHT at a time,
which the player's per-client limit allows) and the stream's frames, subscribed to only while a
page listens (a frame is work in the player's loop: nobody watching, none is made).
When the player goes away (restart, crash, not started yet) every waiting request fails with
NotPlaying, `connected` turns False, the listeners hear it, and the link tries again every
RETRY seconds: the web service never needs the player to be up, and never takes it down.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from typing import Any, Callable

from playbach import wire

log = logging.getLogger(__name__)

IN_FLIGHT = 8
RETRY = 1.0
TIMEOUT = 5.0


class NotPlaying(Exception):
    """The player is not there (or did not answer in time)."""


class Link:
    def __init__(self, path: str):
        self.path = path
        self.connected = False
        self.writer: asyncio.StreamWriter | None = None
        self.waiting: dict[int, asyncio.Future] = {}
        self.ids = itertools.count(1)
        self.slots = asyncio.Semaphore(IN_FLIGHT)
        self.listeners: set[Callable[[dict], None]] = set()   # frames and {"type": "link", ...}
        self.task: asyncio.Task | None = None
        self.said = ""

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._keep_connected())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def request(self, op: str, timeout: float = TIMEOUT, **args: Any) -> dict:
        """The player's reply to one request ({"ok": ...}); NotPlaying if it is not there."""
        async with self.slots:
            if not self.connected or self.writer is None:
                raise NotPlaying("the player is not running")
            number = next(self.ids)
            future = asyncio.get_running_loop().create_future()
            self.waiting[number] = future
            try:
                self.writer.write(wire.encode({"op": op, "id": number, **args}))
                return await asyncio.wait_for(future, timeout)
            except (asyncio.TimeoutError, ConnectionError, OSError) as e:
                raise NotPlaying(f"the player did not answer ({type(e).__name__})") from e
            finally:
                self.waiting.pop(number, None)

    def listen(self, listener: Callable[[dict], None]) -> None:
        """`listener` hears the frames and the link's changes from now on (the first one subscribes)."""
        self.listeners.add(listener)
        if len(self.listeners) == 1:
            self._subscribe(True)

    def unlisten(self, listener: Callable[[dict], None]) -> None:
        self.listeners.discard(listener)
        if not self.listeners:
            self._subscribe(False)

    def _subscribe(self, on: bool) -> None:
        if self.connected and self.writer is not None:
            self.writer.write(wire.encode({"op": "subscribe" if on else "unsubscribe"}))

    def _tell(self, message: dict) -> None:
        for listener in list(self.listeners):
            listener(message)

    def _say(self, text: str, level: int = logging.INFO) -> None:
        if text != self.said:   # once per change, not once per retry
            log.log(level, "%s", text)
            self.said = text

    async def _keep_connected(self) -> None:
        while True:
            try:
                sock = await asyncio.to_thread(wire.connect, self.path, TIMEOUT)
                reader, self.writer = await asyncio.open_unix_connection(sock=sock, limit=wire.MAX_REPLY)
            except OSError as e:
                self._say(f"no player at {self.path} ({e.strerror or e}); trying every {RETRY:g} s", logging.WARNING)
                await asyncio.sleep(RETRY)
                continue
            self.connected = True
            self._say(f"connected to the player at {self.path}")
            self._tell({"type": "link", "connected": True})
            if self.listeners:
                self._subscribe(True)
            try:
                await self._read(reader)
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                log.warning("control socket: %s", e)
            finally:
                self.connected = False
                for future in self.waiting.values():
                    if not future.done():
                        future.set_exception(NotPlaying("the player went away"))
                self.writer.close()
                self.writer = None
                self._say(f"lost the player at {self.path}; trying every {RETRY:g} s", logging.WARNING)
                self._tell({"type": "link", "connected": False})
            await asyncio.sleep(RETRY)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            line = await reader.readline()
            if not line:
                return
            try:
                message = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if not isinstance(message, dict):   # not the player's: a reply is always an object
                continue
            if message.get("type") == "frame":
                self._tell(message)
                continue
            future = self.waiting.get(message.get("id"))
            if future is not None and not future.done():
                future.set_result(message)
