"""Private PostgreSQL and Redis servers on loopback, for the tests and benchmarks that must
stop, kill or restart them, or measure on servers of their own (the machine's are shared).

    with private_redis() as redis, private_postgres() as postgres:
        redis.url, postgres.url        # redis://127.0.0.1:PORT/0, postgres://...:PORT/postgres
        postgres.stop(); postgres.start()

PostgreSQL's own binaries must be installed (Debian: /usr/lib/postgresql/<v>/bin). Its
data folder is made once per server with `initdb` (as the `postgres` user when run as
root, which initdb refuses to be) and removed on exit.
"""

import contextlib
import glob
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# Ports are handed out below Linux's ephemeral range (32768-60999), where the kernel never
# picks one for some process's outgoing connection: a server restarted on its port, or a
# port kept free between two starts, cannot find it taken. Each pytest-xdist worker walks
# its own slice, so two workers do not hand out the same port.
_FIRST_PORT, _PORTS = 20_000, 12_768
_worker = os.environ.get("PYTEST_XDIST_WORKER", "").removeprefix("gw")
_slice = (int(_worker) % 8) * (_PORTS // 8) if _worker.isdigit() else 0
_next_port = [_slice + random.randrange(_PORTS // 16 if _worker.isdigit() else _PORTS)]


def free_port() -> int:
    """A loopback port nothing listens on, not handed out before by this process."""
    for _ in range(_PORTS):
        port = _FIRST_PORT + _next_port[0]
        _next_port[0] = (_next_port[0] + 1) % _PORTS
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free port below the ephemeral range")


def wait_for_port(port: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listened on port {port} within {timeout_s}s") from None
            time.sleep(0.05)


class RedisServer:
    """A redis-server on a free port, keeping nothing on disk."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no"]  # fmt: skip
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_for_port(self.port)

    def kill(self) -> None:
        """SIGKILL: what a crash or an OOM kill looks like to clients."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


class PostgresServer:
    """A PostgreSQL cluster of its own (trust auth, loopback only) on a free port."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self.folder = folder
        self._data = folder / "data"
        self._bin = _postgres_bin()
        self._as_owner(["initdb", "-D", str(self._data), "-U", "postgres", "-A", "trust",
                        "--no-sync", "-E", "UTF8"])  # fmt: skip

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")  # fmt: skip
        log = str(self.folder / "postgres.log")
        self._as_owner(["pg_ctl", "-D", str(self._data), "-o", options, "-l", log, "-w", "start"])
        wait_for_port(self.port)

    def stop(self, mode: str = "fast") -> None:
        """`fast` (a clean shutdown) or `immediate` (as if the server crashed)."""
        self._as_owner(["pg_ctl", "-D", str(self._data), "-m", mode, "-w", "stop"])

    def _as_owner(self, args: list[str]) -> None:
        command = [str(self._bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@contextlib.contextmanager
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextlib.contextmanager
def private_postgres() -> Iterator[PostgresServer]:
    folder = Path(tempfile.mkdtemp(prefix="bm-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    try:
        server = PostgresServer(folder)
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                server.stop("immediate")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if shutil.which("initdb"):
        return Path(str(shutil.which("initdb"))).parent
    if not found:
        raise RuntimeError("PostgreSQL's binaries (initdb, pg_ctl) are not installed")
    return Path(found[-1]).parent
