"""Files that are written whole or not at all, byte-identical from run to run."""

import contextlib
import fcntl
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip date: no wall clock in the bytes


def _prefix(path: Path) -> str:
    return f".{path.name}."


def _suffix(path: Path) -> str:
    return f".tmp{path.suffix}"


# The permissions a plain open() would give: mkstemp makes 0600 whatever the umask.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """``with atomic_path(path) as tmp:`` write ``tmp``; on success it is renamed to
    ``path``, on failure removed, so ``path`` is never left half-written.

    Several processes may write one path at once: each writes its own temporary and
    the last rename wins. A writer holds an exclusive ``flock`` on its temporary until
    it is renamed or removed, so what a killed writer left (a temporary whose lock went
    with its process) is told from a live writer's and removed first. Write into
    ``tmp`` (open it, as ``open``, ``savefig`` and safetensors do), never replace it:
    the lock is on its inode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f"{_prefix(path)}*{_suffix(path)}"):
        _remove_if_dead(stale)
    fd, tmp = _locked_temporary(path)
    try:
        yield tmp
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)  # releases the lock, after the name is gone


def _locked_temporary(path: Path) -> tuple[int, Path]:
    """A new temporary of ``path``: its descriptor, holding an exclusive ``flock``,
    and its name."""
    while True:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=_prefix(path), suffix=_suffix(path))
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a cleaner looks at it
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.stat(name), os.fstat(fd)):
                return fd, Path(name)
        # Between mkstemp and flock a cleaner found it unlocked and removed it: the
        # descriptor is on a nameless inode, and the name, if it comes back, is not ours.
        os.close(fd)


def _remove_if_dead(stale: Path) -> None:
    """Remove ``stale``, another writer's temporary, when no one holds its lock: its
    writer is dead (a live one holds the lock until it is done with the file)."""
    try:
        fd = os.open(stale, os.O_RDONLY)
    except (FileNotFoundError, PermissionError):  # gone already, or another user's
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        stale.unlink(missing_ok=True)
    except BlockingIOError:  # a live writer's
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive(lock: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``lock`` (made if missing, left in place), or
    refuse with ``ValueError(busy)`` when another process holds it. The lock goes with
    the file's closing, also when the process is killed."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(busy) from None
        yield


def save_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Like ``np.savez``, atomically and without timestamps (``np.savez`` stamps the
    wall clock into every zip entry)."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH), buffer.getvalue())


def write_json(path: str | Path, data: object) -> None:
    """Write ``data`` as sorted, indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def library_hash() -> str:
    """A hash of the library's source: a change to any module re-makes every figure and
    every cached result (:mod:`attn_lib.analysis.result_cache`)."""
    package = Path(__file__).parent
    return sha256(*sorted(package.rglob("*.py"), key=lambda p: p.relative_to(package).parts))


def sha256(*paths: str | Path) -> str:
    """One hash over the contents of ``paths``, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()
