"""What a PostgreSQL, libpq or pgvector error message means: a table of the messages users
meet (the seed README's troubleshooting and more), each with why and the exact fix.

`db.connect` uses it to say what a connection failure means, the migrator to add the fix to a
failed statement, `pgvkit doctor --error` for a message a user pasted. The message text is read
first (its words name the object); when the server speaks another language (lc_messages), the
SQLSTATE it always sends decides. It imports nothing that connects, so all of them can use it.
"""

from __future__ import annotations

import re

from ..checks import Check, Report, diagnosis
from ..schema import APP_ROLE
from ..sizing import ROWS_PER_LIST

__all__ = ["explain", "EXPLANATIONS", "BY_SQLSTATE"]

# (pattern, name, detail, why, fix): {0}, {1} are the pattern's groups
EXPLANATIONS = [
    (r'type "vector" does not exist',
     "extension", 'type "vector" does not exist',
     "the vector extension is not created in this database, or it lives in a schema that is not on the search_path",
     "run pgvkit doctor against the same database: it says which of the two and the exact fix"),
    (r"permission denied to create extension \"vector\"|must be superuser to create this extension|"
     r"permission denied to create extension",
     "privileges", "this role may not create the vector extension",
     "vector is not a trusted extension: only a superuser (or the database owner on a server that trusts it) may create it",
     'as a superuser: psql -d <database> -c "CREATE EXTENSION IF NOT EXISTS vector;" then pgvkit migrate'),
    (r"permission denied for schema (\w+)",
     "privileges", "this role may not create objects in schema {0}",
     "since PostgreSQL 15 only the schema's owner may create in public by default",
     "as the schema owner: GRANT CREATE ON SCHEMA {0} TO <role>; (or run migrations as the owner)"),
    (r"permission denied for (?:table|relation) (\w+)",
     "privileges", "this role lacks a privilege on {0}",
     "the application role was never granted (the init SQL granted to jarvis only)",
     f"GRANT SELECT, INSERT, UPDATE, DELETE ON {{0}} TO <role>; (pgvkit verify lists what {APP_ROLE} lacks)"),
    (r"must be owner of (?:table|relation|index) (\w+)",
     "privileges", "only the owner of {0} may change it",
     "DDL (CREATE INDEX, ALTER TABLE) needs ownership, not just grants",
     "run the migration as the owner of {0} (pgvkit doctor names it); never hand the table to another role"),
    (r"permission denied for database \"?([\w$-]+)",
     "privileges", "this role may not create schemas in database {0}",
     "pgvkit keeps its history and tune's scratch copy in schema pgvkit; creating it needs CREATE on the database",
     "run pgvkit migrate once as the database owner (it makes schema pgvkit), or as the owner: "
     "GRANT CREATE ON DATABASE {0} TO <role>;"),
    (r'relation "([\w.]+)" does not exist',
     "migrations", "{0} does not exist",
     "the migrations did not run on this database (the docker init dir only runs on an empty data directory)",
     "pgvkit status, then pgvkit migrate"),
    (r"expected (\d+) dimensions, not (\d+)",
     "data", "a vector of {1} dimensions was written to a vector({0}) column",
     "the embedding model's output size must match the column (the seed's vector(3) example cannot work)",
     "send {0}-dimensional embeddings, or change the column with a migration (and rebuild its index)"),
    (r"different vector dimensions (\d+) and (\d+)",
     "data", "a query compared vectors of {0} and {1} dimensions",
     "the query vector does not have the column's dimension",
     "embed the query with the same model as the stored vectors"),
    (r"cannot execute (\w+(?: \w+)?) in a read-only transaction",
     "writes", "this session is read-only: {0} is refused",
     "the server is a hot standby, or default_transaction_read_only is on for this role or database",
     "pgvkit doctor says which and where it is set: point DATABASE_URL at the primary, or use a role that may write"),
    (r"No space left on device|could not extend file",
     "disk", "the server's disk is full",
     "a statement that needed more room failed and kept nothing (PostgreSQL stays consistent)",
     "free space on the server's data disk (or the tablespace's), then run the same command again: it resumes; "
     "nothing needs to be moved"),
    (r"memory required is (\d+) MB, maintenance_work_mem is (\d+) MB",
     "index build", "IVFFlat build needs {0} MB, maintenance_work_mem is {1} MB",
     "k-means keeps lists * 50 sample vectors in memory",
     "SET maintenance_work_mem = '{0}MB'; before CREATE INDEX (or lower lists)"),
    (r"hnsw graph no longer fits into maintenance_work_mem after (\d+) tuples",
     "index build", "the HNSW graph outgrew maintenance_work_mem after {0} rows",
     "the rest of the build runs on disk and takes much longer",
     "SET maintenance_work_mem to the size pgvkit doctor estimates, then rebuild"),
    (r"ivfflat index created with little data",
     "index build", "the IVFFlat index was built on too little data",
     f"its centroids come from fewer than {ROWS_PER_LIST} rows per list: recall collapses",
     "load the data, then REINDEX INDEX CONCURRENTLY the index (lists ~ rows / 1000)"),
    (r"column cannot have more than (\d+) dimensions for (\w+) index",
     "index build", "{1} indexes take at most {0} dimensions",
     "pgvector's index page layout limits vector dimensions",
     "index a halfvec expression (up to 4000 dims), e.g. USING hnsw ((embedding::halfvec(N)) halfvec_cosine_ops)"),
    (r'extension "((?!vector")[\w-]+)" is not available|could not open extension control file "[^"]*/((?!vector\.)[\w-]+)\.control"',
     "server", "this server has no {0} extension",
     "CREATE EXTENSION needs the extension's files in the server's share directory",
     "pgvkit plan names the migration that needs it; install {0} on the server, or point DATABASE_URL at one that "
     "has it (pgcrypto for gen_random_uuid(): built in since PostgreSQL 13, drop the CREATE EXTENSION)"),
    (r'could not open extension control file "[^"]*/vector\.control"|extension "vector" is not available',
     "server", "pgvector is not installed on this server",
     "CREATE EXTENSION needs the extension's files in the server's share directory",
     "install pgvector on the server (https://github.com/pgvector/pgvector#installation), or use the embedded server"),
    (r"Connection refused|No such file or directory|could not connect to server",
     "connection", "nothing is listening where the URL points",
     "the server is not running, or host / port / socket directory is wrong",
     "start the server (embedded: pgvkit db start) or correct host and port in DATABASE_URL"),
    (r"password authentication failed for user \"?([\w.-]+)",
     "connection", "the server rejected the password of {0} (or there is no role {0}: it does not say which)",
     "wrong password or user name in the URL, or the role has no password",
     "correct the user and password in DATABASE_URL (a superuser can reset it: ALTER ROLE {0} PASSWORD '...')"),
    (r'database "([\w.-]+)" does not exist',
     "connection", "database {0} does not exist on this server",
     "the URL names a database nobody created",
     "createdb -O <role> {0} (or fix the database name in DATABASE_URL)"),
    (r'role "([\w.-]+)" does not exist',
     "connection", "role {0} does not exist on this server",
     "the URL names a role nobody created",
     "as a superuser: CREATE ROLE {0} LOGIN PASSWORD '...'; (or fix the user in DATABASE_URL)"),
    (r"no pg_hba.conf entry for host \"([\d.:a-f]+)\"",
     "connection", "the server's pg_hba.conf has no rule for client {0}",
     "PostgreSQL only accepts clients that pg_hba.conf lists",
     "add a host line for {0} to pg_hba.conf and SELECT pg_reload_conf(); (or connect from an allowed host)"),
    (r"received invalid response to SSL negotiation|expected authentication request from server, but received",
     "connection", "what answered there is not a PostgreSQL server",
     "the port belongs to another service (a web server, a proxy, another database)",
     "point DATABASE_URL at PostgreSQL's port (5432 unless the server says otherwise)"),
    (r"could not translate host name \"([^\"]+)\"|failed to resolve host '([^']+)'",
     "connection", "host name {0} does not resolve",
     "a typo in the host, or DNS is not reachable from here",
     "correct the host in DATABASE_URL"),
    (r"timeout expired",
     "connection", "the server did not answer within the connect timeout",
     "a firewall drops the packets, or the host is down",
     "check that the host and port are reachable from this machine (e.g. pg_isready -h HOST -p PORT)"),
    (r"integer out of range",
     "data", "a number does not fit an integer column",
     "a value past 2147483647; in a migration's history made by pgvkit 0.1, a timestamp version such as 20240101120000",
     "pgvkit migrate upgrades pgvkit's own history to bigint versions; for a table of yours, make the column bigint"),
    (r"canceling statement due to lock timeout",
     "locks", "a statement waited longer than lock_timeout for a table lock",
     "another session holds a conflicting lock (often an idle transaction)",
     "pgvkit doctor names the holder; end it or wait, then re-run (pgvkit migrate retries by itself)"),
]


# What each SQLSTATE means when the message is not one the table above reads (another language):
# the same advice without the names the message would have given.
BY_SQLSTATE = {
    "25006": ("writes", "a write was refused in a read-only transaction (SQLSTATE 25006)",
              "the server is a hot standby, or default_transaction_read_only is on for this role or database",
              "pgvkit doctor says which and where it is set: point DATABASE_URL at the primary, or use a role that "
              "may write"),
    "53100": ("disk", "the server's disk is full (SQLSTATE 53100)",
              "a statement that needed more room failed and kept nothing (PostgreSQL stays consistent)",
              "free space on the server's data disk (or the tablespace's), then run the same command again: it "
              "resumes; nothing needs to be moved"),
    "42704": ("extension", "an object or type does not exist (SQLSTATE 42704)",
              'for type "vector": the extension is not created here, or its schema is not on the search_path',
              "run pgvkit doctor against the same database: it says which and the exact fix"),
    "42P01": ("migrations", "a table or view does not exist (SQLSTATE 42P01)",
              "the migrations did not run on this database (the docker init dir only runs on an empty data directory)",
              "pgvkit status, then pgvkit migrate"),
    "42501": ("privileges", "this role lacks a privilege the statement needs (SQLSTATE 42501)",
              "extensions, schemas and DDL each need their own grant or ownership",
              "pgvkit doctor names the missing privilege and the GRANT that gives it"),
    "28P01": ("connection", "the server rejected the password (SQLSTATE 28P01)",
              "wrong password or user name in the URL, or the role has no password",
              "correct the user and password in DATABASE_URL"),
    "28000": ("connection", "the server refused this role or this client (SQLSTATE 28000)",
              "the role does not exist, or pg_hba.conf has no rule for this client",
              "check the user in DATABASE_URL; a superuser can CREATE ROLE it or add a pg_hba.conf line"),
    "3D000": ("connection", "the database in the URL does not exist (SQLSTATE 3D000)",
              "the URL names a database nobody created",
              "createdb -O <role> <database> (or fix the database name in DATABASE_URL)"),
    "55P03": ("locks", "a statement waited longer than lock_timeout for a lock (SQLSTATE 55P03)",
              "another session holds a conflicting lock (often an idle transaction)",
              "pgvkit doctor names the holder; end it or wait, then re-run (pgvkit migrate retries by itself)"),
    "57014": ("locks", "a statement was cancelled (SQLSTATE 57014)",
              "statement_timeout ran out, or someone cancelled it",
              "raise statement_timeout for that step (SET statement_timeout = ...) or find what makes it slow"),
    "22003": ("data", "a number does not fit its column (SQLSTATE 22003)",
              "in a history made by pgvkit 0.1, a timestamp migration version such as 20240101120000",
              "pgvkit migrate upgrades pgvkit's own history to bigint versions; for a table of yours, use bigint"),
    "58P01": ("server", "a file the server needs is missing (SQLSTATE 58P01)",
              "for CREATE EXTENSION: the extension is not installed on this server",
              "install the extension on the server, or point DATABASE_URL at one that has it (pgvkit plan checks)"),
    "54000": ("index build", "a statement went past a server limit (SQLSTATE 54000)",
              "for an IVFFlat build: maintenance_work_mem is too small for its k-means",
              "pgvkit doctor estimates the memory a rebuild needs; SET maintenance_work_mem to it before CREATE INDEX"),
}
_PASTED_SQLSTATE = re.compile(r"(?:SQLSTATE[:= ]+|^\s*[A-Z]+:\s+)([0-9A-Z]{5})\b")


def explain(error: BaseException | str, sqlstate: str | None = None) -> Report:
    """The checks a known error points to (empty when it is not one pgvkit knows): by its
    message, else by its SQLSTATE (given, a psycopg error's own, or one in a pasted message)."""
    text = " ".join(str(error).split())
    found = []
    for pattern, name, detail, why, fix in EXPLANATIONS:
        m = re.search(pattern, text, flags=re.IGNORECASE)
        if m:
            groups = [g for g in m.groups() if g is not None]  # alternatives leave None groups
            found.append(Check(name, "fail", detail.format(*groups), why, fix.format(*groups)))
    pasted = _PASTED_SQLSTATE.search(text)
    sqlstate = sqlstate or getattr(error, "sqlstate", None) or (pasted.group(1) if pasted else None)
    if sqlstate in BY_SQLSTATE:  # the code decides what kind of error it is; the words only add names
        name, detail, why, fix = BY_SQLSTATE[sqlstate]
        found = [c for c in found if c.name == name] or [Check(name, "fail", detail, why, fix)]
    return diagnosis("the error message given", found)
