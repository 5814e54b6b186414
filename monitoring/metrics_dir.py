"""The node's metrics directory: every process of a node (uvicorn's workers, several
daphne processes) writes its figures there (monitoring/metrics_store.py, in
prometheus-client's multiprocess format), and /metrics merges them, whichever answers.

Who is alive is told by locks, not by pids: each process holds a POSIX lock on one byte
of `processes.lock` (its pid + 1), which the kernel releases when the process ends, however
it ends; byte 0 serialises the processes that join. A process that joins when no process of
the node is alive starts a new run and empties the directory: a node started today does not
inherit yesterday's counters. One exception keeps counters monotonic while the node runs:
a uvicorn worker whose master started the current run joins it even if every other worker
died (the master restarts its workers; they are one node). Files of processes that ended
stay: their counters and histograms were counted; their live gauges are dropped
(`mark_process_dead`). Processes of one node must share one pid namespace: the files are
named by pid.
"""

import atexit
import fcntl
import logging
import multiprocessing
import os
from pathlib import Path

from prometheus_client import multiprocess

log = logging.getLogger(__name__)

LOCK_FILE = "processes.lock"
RUN_FILE = "run"  # who started the current run: a uvicorn master ("pid start-time") or ""
_MUTEX_BYTE = 0
_joined: list[tuple[Path, int]] = []  # (the directory, the lock file's descriptor)


def join(path: Path) -> None:
    """Make this process one of the node's, starting a new run if none of them is alive."""
    if _joined:
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, _MUTEX_BYTE)  # one process at a time decides
    try:
        supervisor = _supervisor()
        if not _anyone_alive(fd) and not (supervisor and _read(path / RUN_FILE) == supervisor):
            for file in path.glob("*.db"):
                file.unlink()
            (path / RUN_FILE).write_text(supervisor)
        _joined.append((path, fd))
        _hold_own_byte()
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _MUTEX_BYTE)
    os.register_at_fork(after_in_child=_hold_own_byte)  # e.g. Celery's prefork children
    atexit.register(_leave)
    sweep_dead()


def sweep_dead() -> None:
    """Drop the live gauges of the processes that ended (uvicorn has no hook that tells
    when a worker dies, and a killed process cannot say it itself)."""
    path = _path()
    for file in path.glob("gauge_live*.db"):
        pid = int(file.stem.rpartition("_")[2])
        if not is_alive(pid):
            multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def is_alive(pid: int) -> bool:
    """Whether a process of this node with that pid is running (not merely any process
    that reuses the pid of one that ended)."""
    if pid == os.getpid():
        return True  # our own lock never conflicts with us; unlocking it would drop it
    fd = _joined[0][1]
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, pid + 1)
    except OSError:
        return True
    fcntl.lockf(fd, fcntl.LOCK_UN, 1, pid + 1)
    return False


def _anyone_alive(fd: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, _MUTEX_BYTE + 1)  # to the end
    except OSError:
        return True
    fcntl.lockf(fd, fcntl.LOCK_UN, 0, _MUTEX_BYTE + 1)
    return False


def _hold_own_byte() -> None:
    try:
        fcntl.lockf(_joined[0][1], fcntl.LOCK_EX | fcntl.LOCK_NB, 1, os.getpid() + 1)
    except OSError:
        log.error("another live process has pid %d in %s: processes of several pid "
                  "namespaces share it, and their counters mix", os.getpid(), _path())  # fmt: skip


def _leave() -> None:
    """At a clean exit: this process's live gauges leave with it."""
    multiprocess.mark_process_dead(os.getpid(), str(_path()))  # type: ignore[no-untyped-call]


def _supervisor() -> str:
    """The uvicorn master ("pid start-time") if this process is one of its workers (they
    are multiprocessing children), else ""."""
    if multiprocessing.parent_process() is None:
        return ""
    parent = os.getppid()
    stat = _read(Path(f"/proc/{parent}/stat"))
    if not stat:
        return ""  # not Linux: a new run whenever no process of the node is alive
    start_ticks = stat.rpartition(")")[2].split()[19]  # field 22 of proc(5)
    return f"{parent} {start_ticks}"


def _path() -> Path:
    return _joined[0][0]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
