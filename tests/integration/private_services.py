"""Private Redis and PostgreSQL servers that a fault test may stop and start: the shared ones on 127.0.0.1
serve other engineers' tests and must never be stopped."""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from bench.load import free_port


class PrivateRedis:
    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.dir = tmp_path
        self.process = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self):
        # No persistence: a stopped Redis comes back empty, as one that lost its disk would.
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


class PrivatePostgres:
    """A cluster of its own (initdb + pg_ctl) in a temporary folder, as the postgres user when run as root."""

    def __init__(self):
        versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        if not versions:
            raise RuntimeError("No PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(versions[-1])
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.dir = Path(tempfile.mkdtemp(prefix="private-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.port = free_port()
        subprocess.run([*self.as_owner, self.bin / "initdb", "-D", self.dir / "data", "-A", "trust", "-U", "postgres",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True)

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def _ctl(self, *args):
        subprocess.run([*self.as_owner, self.bin / "pg_ctl", "-D", self.dir / "data", *args], check=True,
                       capture_output=True)

    def start(self):
        self._ctl("-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                  "-l", self.dir / "log", "-w", "start")
        return self

    def stop(self, mode: str = "fast"):
        # fast: the server ends every session at once (their transactions roll back), as a restart does.
        self._ctl("-m", mode, "-w", "stop")

    def create_database(self, name: str, root: Path):
        """A new database here, migrated by the site's own manage.py."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=root, check=True,
                       capture_output=True, env={**os.environ, "DATABASE_URL": self.url(name),
                                                 "DJANGO_SETTINGS_MODULE": "evalapp.settings.base"})

    def close(self):
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)
