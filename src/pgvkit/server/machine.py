"""The embedded server's settings sized from the machine it runs on, as pgtune sizes them.

PostgreSQL's stock settings (shared_buffers 128 MB, effective_cache_size 4 GB) are a guess for
any machine; on a 24 GB one they keep a million-row index out of PostgreSQL's own cache and make
the planner and pgvkit's memory budget believe 4 GB is all there is. `sized()` gives each setting
with its reason; the embedded server writes them into pgvkit.conf at every start (so a larger
machine gets larger ones), leaving out any the user set in postgresql.conf or with ALTER SYSTEM.

    Machine.here()          # memory (the cgroup's limit when lower) and cores
    sized(Machine.here())   # [Setting("shared_buffers", "6GB", "a quarter of ..."), ...]
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Machine", "Setting", "sized", "user_set", "INITDB_DEFAULTS"]

GB = 1 << 30
MB = 1 << 20

# what initdb writes uncommented into postgresql.conf: not the user's choice
INITDB_DEFAULTS = {"shared_buffers": "128MB", "max_wal_size": "1GB", "min_wal_size": "80MB"}


@dataclass(frozen=True)
class Machine:
    memory: int  # bytes
    cores: int

    @classmethod
    def here(cls) -> Machine:
        return cls(_memory(), os.cpu_count() or 1)

    def describe(self) -> str:
        return f"{self.memory / GB:.0f} GB, {self.cores} core{'s' if self.cores != 1 else ''}"


@dataclass(frozen=True)
class Setting:
    name: str
    value: str
    reason: str

    def line(self) -> str:
        return f"{self.name} = '{self.value}'  # {self.reason}"


def _memory() -> int:
    """The machine's memory, or its container's limit when that is lower (cgroup v2, then v1)."""
    total = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < (total or 1 << 62):
            total = int(text)
    return total or 4 * GB


def _size(n: int) -> str:
    """A size as PostgreSQL reads it, in whole GB or MB."""
    return f"{n // GB}GB" if n >= 4 * GB and n % GB == 0 else f"{max(1, n // MB)}MB"


def sized(machine: Machine) -> list[Setting]:
    """The settings for a server that has this machine to itself (pgtune's rules, OLTP-like web
    application, SSD): each with why, in words a reader of pgvkit.conf can check."""
    m, cores = machine.memory, machine.cores
    on = f"this machine's {machine.describe()}"
    shared = max(128 * MB, (m // 4) // GB * GB if m >= 8 * GB else m // 4)
    cache = max(shared, (m * 3 // 4) // GB * GB if m >= 8 * GB else m * 3 // 4)
    maintenance = min(2 * GB, max(64 * MB, m // 16))
    workers = max(1, min(4, cores - 1))
    return [
        Setting("shared_buffers", _size(shared), f"a quarter of {on}: the vector index's pages stay in "
                "PostgreSQL's own cache (PostgreSQL's default 128MB holds 32,000 rows of a 768-d index)"),
        Setting("effective_cache_size", _size(cache), f"three quarters of {on}: what the planner and pgvkit's "
                "memory budget may count on being cached (PostgreSQL's default: 4GB, whatever the machine)"),
        Setting("maintenance_work_mem", _size(maintenance), f"a sixteenth of {on} (at most 2GB: autovacuum's "
                "workers may each take it): index builds; pgvkit's tuned migrations set their own for the graph"),
        Setting("max_parallel_maintenance_workers", str(workers), f"index builds use every core of the "
                f"{cores} but one (at most 4) beside the leader"),
        Setting("max_wal_size", "4GB", "bulk loads and index builds write a lot of WAL: fewer forced checkpoints "
                "(PostgreSQL's default: 1GB)"),
        Setting("min_wal_size", "1GB", "WAL kept for the next load instead of recycled and made again"),
    ]


_ACTIVE = re.compile(r"^\s*([a-z_.]+)\s*=?\s*(.*?)\s*(?:#.*)?$")


def _active(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _ACTIVE.match(line)
        if m and m.group(1) not in ("include", "include_if_exists", "include_dir"):
            found[m.group(1)] = m.group(2).strip("'\"")
    return found


def user_set(pgdata: Path, names) -> dict[str, str]:
    """Which of `names` the user chose: in postgresql.conf (unlike initdb's own lines), or by
    ALTER SYSTEM (postgresql.auto.conf): where each came from, by name."""
    names = set(names)
    chosen = {}
    try:
        conf = _active((pgdata / "postgresql.conf").read_text())
    except OSError:
        conf = {}
    for name, value in conf.items():
        if name in names and INITDB_DEFAULTS.get(name) != value:
            chosen[name] = "postgresql.conf"
    try:
        for name in _active((pgdata / "postgresql.auto.conf").read_text()):
            if name in names:
                chosen[name] = "ALTER SYSTEM"
    except OSError:
        pass
    return chosen
