"""Where recordings go off-host: a directory (a mounted log volume) or an SFTP log host.

Both sinks write by position — `write_at(path, offset, data)` — and return only once the data is durable on
the sink (fsync; over SFTP the fsync@openssh.com extension), which is what makes an acknowledged offset a
real commit point. `put` replaces a small file atomically (temp name, fsync, rename) for the audit head.

SFTP pins the host key from the config and trusts nothing else: no known_hosts files, no CA, no ssh config,
no agent. A key that does not match refuses the connection (SinkError), it never asks or learns.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import secrets
import threading
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bastion.config import SinkConfig
from bastion.recording.spool import fsync_dir

if TYPE_CHECKING:  # asyncio (3 MB) loads with the first SFTP sink, not in every recorder
    import asyncio

_T = TypeVar("_T")
CONNECT_TIMEOUT_S = 5.0
OP_TIMEOUT_S = 30.0


class SinkError(Exception):
    """The sink is unreachable or refused an operation; one line without secrets."""


def sink_id(config: SinkConfig) -> str:
    """Short stable name of a sink: changing the sink ships everything again."""
    ident = f"{config.type}|{config.host or ''}|{config.port}|{config.user or ''}|{config.path}"
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


def _check_rel(rel: str) -> str:
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise SinkError(f"refusing sink path {rel[:80]!r}")
    return rel


class Sink(ABC):
    """A destination for spool files, addressed by relative POSIX paths."""

    kind: str

    @abstractmethod
    def size(self, rel: str) -> int | None:
        """Size of the file on the sink, None when it does not exist."""

    @abstractmethod
    def write_at(self, rel: str, offset: int, data: bytes) -> None:
        """Write data at offset (creating the file and its directories); durable when it returns."""

    def copy_range(self, rel: str, src_fd: int, offset: int, count: int) -> int:
        """Copy bytes [offset, offset+count) of a local file to the same offset of rel, durably; the number
        copied. Sinks that can do it without passing the bytes through Python override it."""
        done = 0
        while done < count:
            data = os.pread(src_fd, min(count - done, 4 << 20), offset + done)
            if not data:
                break
            self.write_at(rel, offset + done, data)
            done += len(data)
        return done

    @abstractmethod
    def truncate(self, rel: str, size: int) -> None: ...

    @abstractmethod
    def sha256(self, rel: str) -> str | None:
        """SHA-256 of the whole file as the sink has it (read back), None when missing."""

    @abstractmethod
    def put(self, rel: str, data: bytes) -> None:
        """Replace the file atomically and durably."""

    def probe(self) -> None:
        """Raise SinkError unless the sink answers now."""
        self.size("probe")

    def close(self) -> None:  # noqa: B027 - sinks without resources
        """Release connections."""


class DirSink(Sink):
    kind = "dir"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, rel: str) -> Path:
        return self.root / _check_rel(rel)

    def _wrap(self, what: str, exc: OSError) -> SinkError:
        return SinkError(f"sink directory {self.root}: {what}: {exc.strerror or type(exc).__name__}")

    def size(self, rel: str) -> int | None:
        try:
            return self._path(rel).stat().st_size
        except FileNotFoundError:
            if not self.root.is_dir():
                raise SinkError(f"sink directory {self.root} does not exist") from None
            return None
        except OSError as exc:
            raise self._wrap("stat", exc) from None

    def _ensure_parent(self, path: Path) -> None:
        if not self.root.is_dir():
            raise SinkError(f"sink directory {self.root} does not exist")
        parent = path.parent
        if not parent.is_dir():
            parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            fsync_dir(parent.parent)

    def write_at(self, rel: str, offset: int, data: bytes) -> None:
        path = self._path(rel)
        try:
            self._ensure_parent(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
            try:
                view = memoryview(data)
                done = 0
                while done < len(data):
                    done += os.pwrite(fd, view[done:], offset + done)
                os.fsync(fd)
            finally:
                os.close(fd)
            if offset == 0:
                fsync_dir(path.parent)
        except OSError as exc:
            raise self._wrap("write", exc) from None

    def copy_range(self, rel: str, src_fd: int, offset: int, count: int) -> int:
        """copy_file_range: the kernel copies (or shares) the bytes; one fsync at the end."""
        path = self._path(rel)
        try:
            self._ensure_parent(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
            try:
                done = 0
                while done < count:
                    try:
                        n = os.copy_file_range(src_fd, fd, count - done, offset + done, offset + done)
                    except OSError as exc:
                        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                            raise
                        n = 0
                        data = os.pread(src_fd, min(count - done, 4 << 20), offset + done)
                        if data:
                            n = os.pwrite(fd, data, offset + done)
                    if n <= 0:
                        break
                    done += n
                os.fsync(fd)
            finally:
                os.close(fd)
            if offset == 0:
                fsync_dir(path.parent)
            return done
        except OSError as exc:
            raise self._wrap("write", exc) from None

    def truncate(self, rel: str, size: int) -> None:
        try:
            os.truncate(self._path(rel), size)
        except OSError as exc:
            raise self._wrap("truncate", exc) from None

    def sha256(self, rel: str) -> str | None:
        h = hashlib.sha256()
        view = memoryview(bytearray(1 << 20))  # reused: no fresh megabyte per read
        try:
            with open(self._path(rel), "rb", buffering=0) as f:
                while n := f.readinto(view):
                    h.update(view[:n])
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._wrap("read", exc) from None
        return h.hexdigest()

    def put(self, rel: str, data: bytes) -> None:
        path = self._path(rel)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            self._ensure_parent(path)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._wrap("write", exc) from None

    def probe(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise SinkError(f"sink directory {self.root} is missing or not writable")


class SftpSink(Sink):
    """asyncssh SFTP on a private event loop thread; the sync methods wait for it with a timeout."""

    kind = "sftp"

    def __init__(self, config: SinkConfig) -> None:
        if config.host is None or config.user is None or config.private_key_file is None:
            raise SinkError("sftp sink needs host, user and private_key_file")
        if config.host_key is None:
            raise SinkError("sftp sink needs a pinned host_key")
        self.config = config
        self.base = config.path or "."
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._sftp: Any = None
        self._dirs: set[str] = set()

    # -- the loop and the connection

    def _run(self, coro: Coroutine[Any, Any, _T], timeout: float = OP_TIMEOUT_S) -> _T:
        import asyncio

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="sftp-sink", daemon=True)
            self._thread.start()
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except SinkError:
            raise
        except Exception as exc:
            future.cancel()
            self._drop()
            raise SinkError(f"sftp sink {self.config.host}:{self.config.port}: {_describe(exc)}") from None

    async def _client(self) -> Any:
        if self._sftp is not None:
            return self._sftp
        import asyncio

        import asyncssh

        host_key = self.config.host_key
        assert host_key is not None and self.config.private_key_file is not None
        pinned = asyncssh.import_public_key(host_key.line())
        client_key = asyncssh.read_private_key(str(self.config.private_key_file))
        conn = await asyncio.wait_for(
            asyncssh.connect(
                self.config.host,
                self.config.port,
                username=self.config.user,
                client_keys=[client_key],
                known_hosts=([pinned], [], []),
                agent_path=None,
                config=[],
                preferred_auth="publickey",
                x509_trusted_certs=None,
            ),
            CONNECT_TIMEOUT_S,
        )
        try:
            self._sftp = await conn.start_sftp_client()
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return self._sftp

    def _drop(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        self._dirs.clear()
        if conn is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.call_soon_threadsafe(conn.close)

    def _remote(self, rel: str) -> str:
        return posixpath.join(self.base, _check_rel(rel))

    async def _makedirs(self, sftp: Any, directory: str) -> None:
        if directory in self._dirs or directory in ("", "."):
            return
        await sftp.makedirs(directory, exist_ok=True)
        self._dirs.add(directory)

    # -- operations

    def size(self, rel: str) -> int | None:
        async def go() -> int | None:
            import asyncssh

            sftp = await self._client()
            try:
                attrs = await sftp.stat(self._remote(rel))
            except asyncssh.SFTPNoSuchFile:
                return None
            return int(attrs.size or 0)

        return self._run(go())

    def write_at(self, rel: str, offset: int, data: bytes) -> None:
        async def go() -> None:
            import asyncssh

            sftp = await self._client()
            path = self._remote(rel)
            await self._makedirs(sftp, posixpath.dirname(path))
            flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT
            async with sftp.open(path, flags, encoding=None) as f:
                await f.write(data, offset)
                await f.fsync()

        self._run(go())

    def truncate(self, rel: str, size: int) -> None:
        async def go() -> None:
            sftp = await self._client()
            await sftp.truncate(self._remote(rel), size)

        self._run(go())

    def sha256(self, rel: str) -> str | None:
        async def go() -> str | None:
            import asyncssh

            sftp = await self._client()
            h = hashlib.sha256()
            try:
                async with sftp.open(self._remote(rel), "rb") as f:
                    while chunk := await f.read(1 << 20):
                        h.update(chunk)
            except asyncssh.SFTPNoSuchFile:
                return None
            return h.hexdigest()

        return self._run(go(), timeout=OP_TIMEOUT_S * 4)

    def put(self, rel: str, data: bytes) -> None:
        async def go() -> None:
            import asyncssh

            sftp = await self._client()
            path = self._remote(rel)
            await self._makedirs(sftp, posixpath.dirname(path))
            tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.tmp")
            flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC
            async with sftp.open(tmp, flags, encoding=None) as f:
                await f.write(data, 0)
                await f.fsync()
            await sftp.posix_rename(tmp, path)

        self._run(go())

    def probe(self) -> None:
        """A round trip (stat of the sink root), not just the cached connection."""

        async def go() -> None:
            import asyncssh

            sftp = await self._client()
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):  # created with the first write
                await sftp.stat(self.base)

        self._run(go(), timeout=CONNECT_TIMEOUT_S + 1)

    def close(self) -> None:
        if self._loop is None:
            return
        import asyncio

        conn = self._conn
        self._conn = self._sftp = None

        async def shutdown() -> None:
            if conn is not None:
                conn.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.wait_closed(), 2)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(3)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(3)
        with contextlib.suppress(Exception):
            self._loop.close()
        self._loop = self._thread = None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"{type(exc).__name__}{': ' + text if text else ''}"


def open_sink(config: SinkConfig | None) -> Sink | None:
    if config is None:
        return None
    if config.type == "dir":
        return DirSink(config.path)
    return SftpSink(config)
