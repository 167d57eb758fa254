"""The control socket's file: a listening Unix socket that only the player's user, or its group,
may connect to (never world-writable), replacing a stale one a killed player left."""
from __future__ import annotations

import grp
import logging
import os
import socket
import stat
from pathlib import Path

from playbach.errors import UserError

log = logging.getLogger(__name__)

BACKLOG = 16


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
            # playbach.service makes the group the player's own, so the socket is born with it:
            # there chown(2) is refused by the unit's syscall filter (@privileged), and not needed
            if os.stat(path).st_gid != gid:
                os.chown(path, -1, gid)
            mode = 0o660
        except PermissionError:
            log.warning("control socket: cannot give it to group %s (not in it, or chown not allowed); "
                        "only this user may connect", group)
    os.chmod(path, mode)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    log.info("control socket %s (mode %o%s)", path, mode, f", group {group}" if mode == 0o660 else "")
    return sock
