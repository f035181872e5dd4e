"""A throwaway PostgreSQL server for end-to-end tests: initdb into a temporary directory (as the
`postgres` user when the tests run as root, since PostgreSQL refuses root), pg_ctl start with a
Unix socket in that directory and no TCP listener, torn down by stop(). The same recipe as
tests/support/postgres_server.cc, for the Python suites."""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile

PORT = 5432  # names the socket file only: no TCP port is opened


class Postgres:
    def __init__(self):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise AssertionError("no PostgreSQL server (deploy/install-deps.sh installs it)")
        self.bin = os.path.dirname(found[-1])
        self.dir = tempfile.mkdtemp(prefix="coapgate-pg-")
        self.as_user = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run([*self.as_user, f"{self.bin}/initdb", "-D", f"{self.dir}/data", "-U",
                   "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        self.start()

    def _run(self, argv, check=True):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed:\n{r.stdout}{r.stderr}")
        return r

    def start(self):
        options = (f"-c listen_addresses='' -k {self.dir} -p {PORT} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self._run([*self.as_user, f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-l",
                   f"{self.dir}/log", "-w", "-t", "60", "-o", options, "start"])

    def stop(self):
        self._run([*self.as_user, f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-m", "fast",
                   "-w", "stop"])

    def dsn(self, database="postgres"):
        return f"host={self.dir} port={PORT} user=postgres dbname={database}"

    def psql(self, sql, database="postgres"):
        r = self._run([f"{self.bin}/psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d",
                       self.dsn(database), "-c", sql])
        return r.stdout.strip()

    def close(self):
        self._run([*self.as_user, f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-m",
                   "immediate", "stop"], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
