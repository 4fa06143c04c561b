"""PgBouncer in transaction mode in front of the test server, as Supavisor runs on port 6543.

Installed with apt when this runs as root on Debian/Ubuntu and it is missing; otherwise the
tests that need it skip, naming the package.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, make_url

from tests.support.cluster import DASHBOARD_LOGIN, NOBODY_LOGIN, OWNER, WORKER_LOGIN
from tests.support.provisioning import Server

# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgBouncer:
    host: str
    port: int
    server_url: URL

    def url(self, database: str, user: str) -> URL:
        password = None if user == self.server_url.username else user
        return URL.create(
            "postgresql+asyncpg",
            username=user,
            password=password,
            host=self.host,
            port=self.port,
            database=database,
        )


def _pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None
    )


def _install_pgbouncer() -> str | None:
    """apt-get install pgbouncer when this is root on Debian/Ubuntu; else None."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "pgbouncer"]
    for attempt in ([install], [["apt-get", "update", "-q"], install]):
        for command in attempt:
            subprocess.run(command, env=env, capture_output=True, timeout=600, check=False)
        if _pgbouncer_binary():
            return _pgbouncer_binary()
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def start_pgbouncer(server: Server, *, pool_size: int = 8) -> Iterator[PgBouncer]:
    """PgBouncer (transaction pooling, trust auth) on a free port; skip if unavailable."""
    binary = _pgbouncer_binary() or _install_pgbouncer()
    if binary is None:
        pytest.skip(
            "PgBouncer is not installed and cannot be installed here (needs root and "
            "apt-get): install the pgbouncer package to run the transaction-pooler tests"
        )
    admin = make_url(server.admin_url)
    socket_dir = admin.query.get("host")
    target_host = str(socket_dir) if socket_dir else (admin.host or "127.0.0.1")
    target_port = admin.port or int(str(admin.query.get("port", 5432)))
    # PgBouncer refuses to run as root; it then runs as the owner of the server's socket
    # directory (the embedded server's OS user), which can reach the socket.
    run_as: str | None = None
    if os.geteuid() == 0:
        uid = os.stat(target_host).st_uid if target_host.startswith("/") else None
        run_as = pwd.getpwuid(uid).pw_name if uid else "nobody"
    workdir = Path(tempfile.mkdtemp(prefix="email-delivery-pgbouncer-"))
    port = _free_port()
    users = [admin.username or "postgres", OWNER, WORKER_LOGIN, DASHBOARD_LOGIN, NOBODY_LOGIN]
    auth = "\n".join(
        f'"{u}" "{admin.password or ""}"' if u == admin.username else f'"{u}" "{u}"' for u in users
    )
    (workdir / "users.txt").write_text(auth + "\n")
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={target_host} port={target_port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "users.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
ignore_startup_parameters = extra_float_digits,options
logfile = {workdir / "pgbouncer.log"}
"""
    )
    if run_as:
        owner = pwd.getpwnam(run_as)
        for path in (workdir, *workdir.iterdir()):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    command = [binary, *(["-u", run_as] if run_as else []), str(workdir / "pgbouncer.ini")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                log_file = workdir / "pgbouncer.log"
                log = log_file.read_text() if log_file.exists() else ""
                raise RuntimeError(f"pgbouncer did not start on port {port}: {log}")
            time.sleep(0.05)
        yield PgBouncer(host="127.0.0.1", port=port, server_url=admin)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)
