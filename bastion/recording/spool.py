"""The local spool: where every recording is written first, and what the shipper drains.

Files are append-only and written unbuffered (one write(2) per event), so terminal output is in the spool —
page cache, which survives a kill -9 of the writer — the moment it is recorded; the live shipper fdatasyncs
them at least once per tick before shipping, which bounds what a power loss can take. A failed write is cut
back to the last whole line, so a cast on a full disk stays valid JSON Lines up to the failure.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bastion.config import Config

SESSION_ID = re.compile(r"s-[0-9]{8}T[0-9]{6}-[0-9a-f]{12}")
SEAL_RESERVE = ".seal-reserve"
SHIPPED_STAMP = ".shipped"
MANIFEST = "manifest.json"
RESERVE_BYTES = 64 * 1024
_NOFOLLOW = os.O_CLOEXEC | os.O_NOFOLLOW


class SpoolError(Exception):
    """The spool cannot be used; one line for the user (no secrets, no paths beyond the spool's)."""


class SpoolWriteError(SpoolError):
    """A write to a spool file failed (ENOSPC, EIO, …); everything before it is intact."""

    def __init__(self, path: Path, exc: OSError) -> None:
        self.errno = exc.errno
        reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        super().__init__(f"cannot write {path.name} in the spool: {reason}")


class SpoolFile:
    """An append-only spool file written with one write(2) per call, no user-space buffer.

    It is also the file object the asciinema writer writes its lines to (`write(str)`); `size` counts the
    bytes that are on file. After a failed write the file is truncated back to `size`, so it never ends in a
    torn line, and every later write raises the same error.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | _NOFOLLOW, 0o600)
        self.size = 0
        self.failed: SpoolWriteError | None = None

    def write(self, text: str) -> int:
        self.write_bytes(text.encode("utf-8"))
        return len(text)

    def write_bytes(self, data: bytes) -> None:
        self.write_parts((data,))

    def write_parts(self, parts: tuple[bytes, ...]) -> None:
        """One line from its pieces with one writev(2): no user-space copy to join them."""
        if self.failed is not None:
            raise self.failed
        total = sum(len(part) for part in parts)
        done = 0
        try:
            done = os.writev(self.fd, parts)
            if done < total:  # short write (a signal, a nearly full disk): the rest, then its error if any
                rest = memoryview(b"".join(parts))
                while done < total:
                    done += os.write(self.fd, rest[done:])
        except OSError as exc:
            self.failed = SpoolWriteError(self.path, exc)
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise self.failed from None
        self.size += done

    def flush(self) -> None:
        """Nothing is buffered; here for the file protocol."""

    def sync(self) -> None:
        if self.fd >= 0 and self.failed is None:
            os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def forget(self) -> None:
        """Close the descriptor without anything else: a forked child drops the parent's files this way."""
        self.close()


@dataclass(frozen=True)
class Spool:
    """The spool directory of one bastion host."""

    root: Path

    @classmethod
    def of(cls, config: Config) -> Spool:
        return cls(config.bastion.spool)

    @property
    def sessions(self) -> Path:
        return self.root / "sessions"

    @property
    def ship_dir(self) -> Path:
        return self.root / ".ship"

    def ensure(self) -> None:
        """Create the spool's directories (0700: casts show everything users saw)."""
        for path in (self.root, self.sessions, self.ship_dir):
            try:
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise SpoolError(f"spool {self.root} is not usable: {exc.strerror}") from None

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def session_dirs(self) -> Iterator[Path]:
        """Session directories (never the hidden ones being created)."""
        try:
            entries = sorted(os.scandir(self.sessions), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for entry in entries:
            if SESSION_ID.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                yield Path(entry.path)

    def create_session_dir(self, session_id: str) -> tuple[Path, int]:
        """A new session directory, already locked: (path, descriptor holding the exclusive flock).

        Made under a hidden name, locked, then renamed into place, so `bastion ship` never sees it unlocked.
        The seal reserve is allocated here: a session that starts can always be sealed, even on a full disk.
        """
        if not SESSION_ID.fullmatch(session_id):
            raise SpoolError("malformed session id")
        self.ensure()
        hidden = self.sessions / f".new-{session_id}"
        final = self.sessions / session_id
        try:
            hidden.mkdir(mode=0o700)
            fd = os.open(hidden, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
        except OSError as exc:
            raise SpoolError(f"spool {self.root} is not writable: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            reserve(hidden / SEAL_RESERVE)
            os.rename(hidden, final)
            fsync_dir(self.sessions)
        except OSError as exc:
            os.close(fd)
            shutil.rmtree(hidden, ignore_errors=True)
            raise SpoolError(f"spool {self.root} is not writable: {exc.strerror}") from None
        return final, fd


def reserve(path: Path, size: int = RESERVE_BYTES) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.write(fd, b"\0" * size)
        os.fsync(fd)
    finally:
        os.close(fd)


def try_lock(path: Path) -> int | None:
    """An exclusive flock on a directory, or None when its owner (a live session) holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def whole_lines_size(path: Path) -> int:
    """Bytes up to and including the last newline: what a crash-torn line file is cut back to."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            end = start
    return 0


def cut_torn_tail(path: Path) -> int:
    """Truncate a line file to its last whole line; the number of bytes cut (0 when it was whole)."""
    size = path.stat().st_size
    whole = whole_lines_size(path)
    if whole < size:
        os.truncate(path, whole)
    return size - whole


def session_files(directory: Path) -> list[Path]:
    """The files a manifest covers: every regular, non-hidden file but the manifest itself."""
    out = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name == MANIFEST:
            continue
        if entry.is_file(follow_symlinks=False):
            out.append(Path(entry.path))
    return out
