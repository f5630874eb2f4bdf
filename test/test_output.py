"""Output: the Heroku line formats, and redaction of passwords and URLs from every line."""

from __future__ import annotations

import io

import pytest

from herokumigrate.output import Output
from support import TEST_PASSWORD


def _output() -> tuple[Output, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Output(out, err, color=False), out, err


# ----- redact -------------------------------------------------------------------------------

URLS = {
    "postgres": "postgres://app:s3cr3t-pw@db.example.com:5432/d1",
    "postgresql": "postgresql://app:s3cr3t-pw@db.example.com/d1?sslmode=require",
    "upper-case-scheme": "POSTGRES://app:s3cr3t-pw@db.example.com/d1",
    "no-port": "postgres://app:s3cr3t-pw@db.example.com/d1",
    "ipv6-host": "postgres://app:s3cr3t-pw@[::1]:5432/d1",
    "socket-query": "postgres://app:s3cr3t-pw@/d1?host=%2Fvar%2Frun%2Fpostgresql",
    "encoded-password": "postgres://app:p%40ss%3Aw%2Frd-s3cr3t-pw@h/d1",
}


@pytest.mark.parametrize("url", URLS.values(), ids=URLS.keys())
@pytest.mark.parametrize(
    "template",
    ["{}", "could not connect to {} (timeout)", 'connection to "{}" failed', "url='{}'"],
    ids=["alone", "in-a-sentence", "double-quoted", "single-quoted"],
)
def test_urls_are_redacted(url: str, template: str) -> None:
    output, _, _ = _output()
    text = output.redact(template.format(url))
    assert "s3cr3t-pw" not in text
    assert "db.example.com" not in text  # the whole URL goes: it is the credential
    assert "[REDACTED]" in text
    assert text.startswith(template.split("{}", maxsplit=1)[0])
    assert text.endswith(template.split("{}")[1])


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("password=s3cr3t-pw host=h", " host=h"),
        ("host=h password = s3cr3t-pw dbname=d", "host=h "),
        ("PASSWORD=s3cr3t-pw", ""),
        ("host=h password='s3cr3t-pw with spaces' port=5", "host=h "),
        ("password='it\\'s s3cr3t-pw' user=u", " user=u"),
    ],
    ids=["first", "spaced", "upper-case", "quoted-with-spaces", "quoted-with-escape"],
)
def test_conninfo_passwords_are_redacted(text: str, kept: str) -> None:
    output, _, _ = _output()
    redacted = output.redact(text)
    assert "s3cr3t-pw" not in redacted
    assert "password=[REDACTED]" in redacted
    assert kept in redacted


def test_registered_secrets_are_redacted_anywhere() -> None:
    output, _, _ = _output()
    output.add_secret(TEST_PASSWORD)
    text = output.redact(f'FATAL: role "x" said {TEST_PASSWORD}; again:{TEST_PASSWORD}!')
    assert TEST_PASSWORD not in text
    assert "p@ss" not in text
    assert text == 'FATAL: role "x" said [REDACTED]; again:[REDACTED]!'


def test_the_longest_secret_is_replaced_first() -> None:
    output, _, _ = _output()
    output.add_secret("hunter2")
    output.add_secret("mysql://u:hunter2@h/d")  # a URL the URL pattern does not know
    assert output.redact("bad url mysql://u:hunter2@h/d") == "bad url [REDACTED]"


@pytest.mark.parametrize("blank", ["", " ", "  ", "\n", "\t "], ids=repr)
def test_blank_values_are_not_secrets(blank: str) -> None:
    # DATABASE_URL="  " is a mistake to report, not a secret: registering it must not turn
    # every run of spaces in the output (the ` !     ` prefix, the indent) into [REDACTED].
    output, _, err = _output()
    output.add_secret(blank)
    assert output.redact("a  b\n  c") == "a  b\n  c"
    output.error("DATABASE_URL is not set (or empty)", "Set it.")
    assert err.getvalue() == " !     DATABASE_URL is not set (or empty)\n !     Set it.\n"


def test_text_without_secrets_is_unchanged() -> None:
    output, _, _ = _output()
    output.add_secret("s3cr3t-pw")
    text = '20240101_users.up.sql: line 3: ERROR 42P01: relation "users" does not exist'
    assert output.redact(text) == text


# ----- every channel redacts ----------------------------------------------------------------


def test_every_channel_redacts() -> None:
    output, out, err = _output()
    output.add_secret("s3cr3t-pw")
    url = "postgres://app:other-pw@h/d"
    output.step(f"step s3cr3t-pw {url}")
    output.detail(f"detail s3cr3t-pw {url}")
    output.plain(f'{{"url": "{url}", "pw": "s3cr3t-pw"}}')
    output.warn(f"warn s3cr3t-pw {url}")
    output.error(f"error s3cr3t-pw {url}", "fix password=other-pw")
    everything = out.getvalue() + err.getvalue()
    assert "s3cr3t-pw" not in everything
    assert "other-pw" not in everything
    assert everything.count("[REDACTED]") == 11


# ----- formats ------------------------------------------------------------------------------


def test_line_formats() -> None:
    output, out, err = _output()
    output.step("Applying 2 migration(s)")
    output.detail("1_a: 3 ms\n2_b: 4 ms")
    output.warn("careful")
    output.error("it broke", "the cause", "Fix it like this.")
    assert out.getvalue() == "-----> Applying 2 migration(s)\n       1_a: 3 ms\n       2_b: 4 ms\n"
    assert err.getvalue() == (
        " !     careful\n !     it broke\n !     the cause\n !     Fix it like this.\n"
    )


def test_a_multi_line_message_keeps_the_prefix_on_every_line() -> None:
    output, _, err = _output()
    output.error("first\nsecond")
    assert err.getvalue() == " !     first\n !     second\n"


def test_color_only_when_asked() -> None:
    out, err = io.StringIO(), io.StringIO()
    Output(out, err, color=True).error("boom")
    assert err.getvalue() == "\033[31m !     boom\033[0m\n"


def test_no_color_by_default_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    out, err = io.StringIO(), io.StringIO()
    Output(out, err).error("boom")
    assert err.getvalue() == " !     boom\n"
