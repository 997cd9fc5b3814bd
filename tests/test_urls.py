"""Database URLs: which one is used, how it prints, and that a password never shows."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgvkit.errors import ConfigError, ConnectionFailed
from pgvkit.server.db import connect, label, mask_url, psycopg_url, resolve, scrub, sqlalchemy_url

from .conftest import free_port


@pytest.mark.parametrize(
    "url, masked",
    [
        ("postgresql://app:s3cr3t@db.example:5432/jarvis", "postgresql://app:***@db.example:5432/jarvis"),
        ("postgresql+psycopg://app:s3cr3t@db/jarvis?sslmode=require", "postgresql+psycopg://app:***@db/jarvis?sslmode=require"),
        ("postgresql://app@db/jarvis?password=s3cr3t&sslmode=require", "postgresql://app@db/jarvis?password=***&sslmode=require"),
        ("host=db user=app password=s3cr3t dbname=jarvis", "host=db user=app password=*** dbname=jarvis"),
        ("host=db password='s3 cr3t' dbname=jarvis", "host=db password=*** dbname=jarvis"),
        ("postgresql://app@db/jarvis", "postgresql://app@db/jarvis"),
    ],
)
def test_mask_url_hides_the_password_in_every_form(url, masked):
    assert mask_url(url) == masked


passwords = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="@/?#&'\\ "), min_size=1, max_size=20)


@given(passwords)
def test_no_password_survives_masking(password):
    from urllib.parse import quote

    secret = "PW" + password
    for url in (f"postgresql://app:{quote(secret, safe='')}@h/db", f"host=h user=app password={secret} dbname=db"):
        assert quote(secret, safe="") not in mask_url(url) and secret not in mask_url(url)


def test_scrub_removes_the_password_from_any_message():
    url = "postgresql://app:hunter2x@h/db"
    assert scrub("auth failed for hunter2x", url) == "auth failed for ***"


def test_sqlalchemy_urls_are_accepted_and_produced():
    assert psycopg_url("postgresql+psycopg://a@h/db") == "postgresql://a@h/db"
    assert psycopg_url("postgres://a@h/db") == "postgresql://a@h/db"
    assert sqlalchemy_url("postgresql://a:b@h/db") == "postgresql+psycopg://a:b@h/db"
    assert sqlalchemy_url("host=/tmp/s dbname=db user=a").startswith("postgresql+psycopg://a@/db?host=")


def test_a_url_that_is_not_postgresql_is_refused():
    with pytest.raises(ConfigError, match="not PostgreSQL"):
        psycopg_url("mysql://a@h/db")


def test_the_flag_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://env@h/db")
    assert resolve("postgresql://flag@h/db").source == "flag"
    assert resolve().url == "postgresql://env@h/db" and resolve().source == "env"


def test_an_unreachable_server_is_one_line_without_the_password():
    url = f"postgresql://app:topsecret99@127.0.0.1:{free_port()}/jarvis"
    with pytest.raises(ConnectionFailed) as info:
        connect(url)
    text = str(info.value)
    assert "topsecret99" not in text and "\n" not in text
    assert "app:***@127.0.0.1" in text and "DATABASE_URL" in text


users = st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True)
hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,6})?", fullmatch=True)
any_password = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=20)


@given(user=users, password=any_password, host=hosts, port=st.integers(1, 65535), dbname=users,
       form=st.sampled_from(["url", "sqlalchemy", "keywords"]))
def test_any_url_parses_to_its_parts_and_masks_its_password_whatever_it_holds(user, password, host, port,
                                                                                dbname, form):
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from sqlalchemy.engine import make_url

    secret = "PW-" + password
    url = {
        "url": f"postgresql://{user}:{quote(secret, safe='')}@{host}:{port}/{dbname}",
        "sqlalchemy": f"postgresql+psycopg://{user}:{quote(secret, safe='')}@{host}:{port}/{dbname}",
        "keywords": make_conninfo(user=user, password=secret, host=host, port=port, dbname=dbname),
    }[form]
    parts = {"user": user, "password": secret, "host": host, "port": str(port), "dbname": dbname}
    assert conninfo_to_dict(psycopg_url(url)) == parts  # what libpq is given
    via_sqlalchemy = make_url(sqlalchemy_url(url))  # what JupySQL is given
    assert (via_sqlalchemy.username, via_sqlalchemy.password, via_sqlalchemy.host, via_sqlalchemy.port,
            via_sqlalchemy.database) == (user, secret, host, port, dbname)
    masked = mask_url(url)
    assert secret not in masked and quote(secret, safe="") not in masked
    assert {k: v for k, v in conninfo_to_dict(psycopg_url(masked)).items() if k != "password"} == {
        k: v for k, v in parts.items() if k != "password"}  # masking leaves everything else intact
    assert secret not in scrub(f"FATAL: password {secret} rejected", url)
    where = label(url)  # the words a report's title uses
    assert secret not in where and quote(secret, safe="") not in where
    assert where == f"{dbname} as {user} on {host}:{port}"


@pytest.mark.parametrize("password", ["Zq#9kLm2", "Tt?77seCret", "a&b=c:d", "x%40y", "semi;colon'quote", "spa ce"])
def test_passwords_with_url_characters_are_masked_as_libpq_reads_them(password):
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    raw = password if not set(password) & set("@/% ") else quote(password, safe="")
    for url in (f"postgresql://jarvis:{raw}@127.0.0.1/jarvis", f"postgresql://jarvis:{raw}@h1:5432,h2:5433/jarvis",
                f"postgresql://jarvis@127.0.0.1/jarvis?sslmode=disable&password={quote(password, safe='')}"):
        assert conninfo_to_dict(url)["password"] == password  # libpq reads it as written
        masked = mask_url(url)
        assert password not in masked and raw not in masked and "***" in masked
        assert "127.0.0.1" in masked or "h1:5432,h2:5433" in masked


def _as_libpq_would_take_it(password: str, encode_all: bool) -> str:
    """The password in a URL's credentials: as written where libpq allows (not @ / % or space), else encoded."""
    from urllib.parse import quote

    return quote(password, safe="") if encode_all or set(password) & set("@/% ") else password


# every printable ASCII character, with the ones that mean something in a URL or a conninfo drawn often
printable = st.text(st.one_of(st.sampled_from("#?&=:;@/%+ '\"\\"), st.characters(min_codepoint=32, max_codepoint=126)),
                    min_size=1, max_size=16)


@given(password=printable, encode_all=st.booleans(), form=st.sampled_from(["credentials", "query", "keywords"]))
def test_no_output_of_a_failing_connection_shows_a_printable_password(password, encode_all, form):
    """Every channel a user sees when the server cannot be reached: the error, the CLI's lines
    (stdout and stderr), the doctor's report and its JSON, the target's repr."""
    import contextlib
    import io
    import json
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from pgvkit.cli import main
    from pgvkit.health.doctor import doctor

    secret = "Pw" + password
    port = free_port()
    url = {
        "credentials": f"postgresql://app:{_as_libpq_would_take_it(secret, encode_all)}@127.0.0.1:{port}/db",
        "query": f"postgresql://app@127.0.0.1:{port}/db?password={quote(secret, safe='')}",
        "keywords": make_conninfo(user="app", password=secret, host="127.0.0.1", port=port, dbname="db"),
    }[form]
    assert conninfo_to_dict(url)["password"] == secret
    seen = [mask_url(url), repr(resolve(url))]
    with pytest.raises(ConnectionFailed) as failed:
        connect(url)
    seen.append(str(failed.value))
    report = doctor(url)
    seen += [str(report), json.dumps(report.to_dict())]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["status", "--database-url", url]) == 2
    seen += [out.getvalue(), err.getvalue()]
    leaked = [text for text in seen if secret in text or quote(secret, safe="") in text]
    assert leaked == []


@pytest.mark.parametrize("url, words", [
    ("host=/tmp/pgvkit-regen-x1/server/pgdata user=jarvis dbname=jarvis port=5432",
     "jarvis as jarvis via the local socket"),  # a saved notebook must not hold this machine's path
    ("postgresql://jarvis:Pw#d0nt?l3ak&9f:2c@db.internal/jarvis", "jarvis as jarvis on db.internal:5432"),
    ("postgresql://app@h1:5433,h2:5434/vectors?target_session_attrs=read-write", "vectors as app on h1:5433,h2:5434"),
    ("postgresql+psycopg://app:s3cret@[::1]:6432/v", "v as app on ::1:6432"),
])
def test_a_title_says_where_in_words_without_password_or_socket_directory(url, words):
    assert label(url) == words
