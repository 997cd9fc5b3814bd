"""What a PostgreSQL, libpq or pgvector error message means: a table of the messages users
meet (the seed README's troubleshooting and more), each with why and the exact fix.

`db.connect` uses it to say what a connection failure means; `pgvkit doctor --error` uses it
for a message a user pasted. It imports nothing that connects, so both can use it.
"""

from __future__ import annotations

import re

from .checks import Check, Report, diagnosis
from .schema import APP_ROLE
from .sizing import ROWS_PER_LIST

__all__ = ["explain", "EXPLANATIONS"]

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
     "run the migration as the owner, or: ALTER TABLE {0} OWNER TO <role>;"),
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
    (r'could not open extension control file|extension "vector" is not available',
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
    (r"canceling statement due to lock timeout",
     "locks", "a statement waited longer than lock_timeout for a table lock",
     "another session holds a conflicting lock (often an idle transaction)",
     "pgvkit doctor names the holder; end it or wait, then re-run (pgvkit migrate retries by itself)"),
]


def explain(error: BaseException | str) -> Report:
    """The checks a known error message points to (empty when it is not one pgvkit knows)."""
    text = " ".join(str(error).split())
    found = []
    for pattern, name, detail, why, fix in EXPLANATIONS:
        m = re.search(pattern, text, flags=re.IGNORECASE)
        if m:
            groups = [g for g in m.groups() if g is not None]  # alternatives leave None groups
            found.append(Check(name, "fail", detail.format(*groups), why, fix.format(*groups)))
    return diagnosis("the error message given", found)
