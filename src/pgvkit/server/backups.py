"""Backups with the wheel's pg_dump (custom format) and restores with pg_restore.

The password reaches libpq through PGPASSWORD, never the command line (which `ps` shows).
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from psycopg import conninfo as _conninfo

from ..errors import BackupError, ConfirmationRequired
from .db import mask_url, psycopg_url, scrub
from .embedded import bin_path, default_home

__all__ = ["backup", "restore", "default_backup_dir"]


def default_backup_dir() -> Path:
    return default_home() / "backups"


def _client_args(url: str) -> tuple[str, dict]:
    """A conninfo string without the password, and an environment carrying it."""
    params = _conninfo.conninfo_to_dict(psycopg_url(url))
    password = params.pop("password", None)
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = str(password)
    return _conninfo.make_conninfo(**params), env


def _dbname(url: str) -> str:
    params = _conninfo.conninfo_to_dict(psycopg_url(url))
    return str(params.get("dbname") or params.get("user") or "db")


def backup(url: str, directory: Path | str | None = None) -> Path:
    """Write a timestamped pg_dump custom-format file and return its path (mode 0600)."""
    directory = Path(directory) if directory else default_backup_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    path = directory / f"{_dbname(url)}-{stamp}.dump"
    conninfo, env = _client_args(url)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    proc = subprocess.run(
        [str(bin_path() / "pg_dump"), "--format=custom", "--file", str(path), "--dbname", conninfo],
        env=env, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        path.unlink(missing_ok=True)
        raise BackupError(
            f"pg_dump of {mask_url(url)} failed: {scrub(' '.join(proc.stderr.split()), url)[:400]}"
        )
    return path


def restore(url: str, path: Path | str, *, yes: bool = False) -> None:
    """Restore a backup over the database (objects in the dump are dropped and recreated)."""
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"backup file {path} does not exist; list them with: ls {default_backup_dir()}")
    if not yes:
        raise ConfirmationRequired(
            f"restore replaces every object in {path.name} on {mask_url(url)}; add --yes to go ahead"
        )
    conninfo, env = _client_args(url)
    proc = subprocess.run(
        [str(bin_path() / "pg_restore"), "--clean", "--if-exists", "--single-transaction",
         "--exit-on-error", "--dbname", conninfo, str(path)],
        env=env, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise BackupError(
            f"pg_restore of {path.name} into {mask_url(url)} failed and changed nothing "
            f"(single transaction): {scrub(' '.join(proc.stderr.split()), url)[:400]}"
        )
