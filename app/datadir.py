"""One server per data dir: an exclusive lock on ``<data dir>/.lock``, taken before anything is written.

Two servers on one data dir would each mark the other's running jobs interrupted, overwrite each
other's registries, delete each other's half-written uploads and let two FAISS indexes of one
collection diverge. ``fcntl.flock`` is held by the open file: the kernel drops it when the process
exits however it exits (``kill -9`` included), so a stale lock never needs cleaning up. The file
holds the owner's pid, which the refusal names.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DataDirBusy(RuntimeError):
    def __init__(self, path: Path, pid: int | None, what: str = "data dir") -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"{what} {path} is in use by {who}")
        self.path = path
        self.pid = pid


class DataDirLock:
    """Hold ``<data dir>/.lock`` until ``release`` (or the process ends)."""

    def __init__(self, data_dir: Path, what: str = "data dir") -> None:
        self.what = what
        self.data_dir = Path(data_dir).resolve()
        self.path = self.data_dir / ".lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DataDirLock:
        """Take the lock or raise ``DataDirBusy`` at once (never waits)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataDirBusy(self.data_dir, pid, self.what) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


class StateLocks:
    """The data dir's lock, and the adapters dir's when it lies outside the data dir (its
    ``registry.json`` is state too): all taken, or none."""

    def __init__(self, data_dir: Path, adapters_dir: Path) -> None:
        self.locks = [DataDirLock(data_dir)]
        data, adapters = Path(data_dir).resolve(), Path(adapters_dir).resolve()
        if adapters != data and data not in adapters.parents:
            self.locks.append(DataDirLock(adapters, "adapters dir"))

    @property
    def held(self) -> bool:
        return all(lock.held for lock in self.locks)

    def acquire(self) -> StateLocks:
        taken: list[DataDirLock] = []
        try:
            for lock in self.locks:
                taken.append(lock.acquire())
        except BaseException:
            for lock in taken:
                lock.release()
            raise
        return self

    def release(self) -> None:
        for lock in reversed(self.locks):
            lock.release()
