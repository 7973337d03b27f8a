"""A throw-away PostgreSQL server for the tests: initdb'd in a temp folder, Unix socket only.

``PostgresServer.start()`` finds ``initdb``/``pg_ctl`` (on PATH, else the newest
/usr/lib/postgresql/*/bin), builds a cluster in a fresh temp folder (as the ``postgres`` user
when run as root: initdb refuses root), and starts it listening on a socket in that folder and
on no TCP port. ``new_database()`` gives each test an empty database of its own.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

TEST_DATABASE = "libtagger_test"


def find_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name)
                        if Path(p).parent.parent.name.isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


class PostgresServer:
    """One running cluster; :meth:`stop` stops it and removes its folder."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="libtagger-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root  # short: a socket path is limited to ~107 bytes
        self.log = self.root / "server.log"
        self._user: list[str] = []
        self._names = itertools.count(1)

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._user, *args], capture_output=True, text=True,
                                timeout=120, check=False)
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stderr.strip()}\n{log}")

    def start(self, durable: bool = False) -> PostgresServer:
        """Start the cluster; ``durable`` keeps PostgreSQL's default settings (benchmarks),
        otherwise fsync and its companions are off (tests: durability is not under test)."""
        if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to postgres
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._user = ["runuser", "-u", "postgres", "--"]
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
        options = f"-k {self.socket_dir} -c listen_addresses=''"
        if not durable:  # no fsync makes creating databases cheap
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                  "-o", options, "-w", "-t", "60", "start")
        self._admin(f"CREATE DATABASE {TEST_DATABASE}")
        return self

    def url(self, database: str = TEST_DATABASE) -> str:
        """The SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), user="postgres", dbname="postgres",
                             autocommit=True) as connection:
            connection.execute(sql)

    def new_database(self) -> str:
        """An empty database of its own: its URL."""
        name = f"t_{next(self._names)}"
        self._admin(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing whatever connections a test left open to it."""
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                          "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
