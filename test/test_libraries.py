"""A shared library that cannot be loaded is an environment problem, named with the variable to
check, never reported as a bug (`libraries.unloadable_library`)."""

from __future__ import annotations

import pytest

from herokumigrate.errors import EXIT_BAD_INPUT
from herokumigrate.libraries import unloadable_library

PSYCOPG = (
    "no pq wrapper available. Attempts made: - couldn't import psycopg 'c' implementation: "
    "No module named 'psycopg_c' - couldn't import psycopg 'python' implementation: "
)


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        (PSYCOPG + "/tmp/x/libpq.so.5: file too short", "(/tmp/x/libpq.so.5: file too short)"),
        (
            PSYCOPG + "libpq.so.5: cannot dynamically load position-independent executable",
            "(libpq.so.5: cannot dynamically load position-independent executable)",
        ),
        (PSYCOPG + "libpq library not found", "(libpq.so.5: not found)"),
        (
            "libssl.so.3: cannot open shared object file: No such file or directory",
            "(libssl.so.3: cannot open shared object file: No such file or directory)",
        ),
    ],
)
@pytest.mark.parametrize("variable", ["LD_LIBRARY_PATH", "LD_PRELOAD", None])
def test_a_library_that_does_not_load_names_the_variable_to_check(
    message: str, shown: str, variable: str | None
) -> None:
    env = {variable: "/tmp/x"} if variable else {}
    problem = unloadable_library(ImportError(message), env)
    assert problem is not None
    assert problem.exit_code == EXIT_BAD_INPUT
    assert problem.message.startswith("heroku-migrate cannot load the shared library lib")
    assert problem.message.endswith(f" {shown}.")
    if variable is not None:
        assert problem.fix.startswith(f"Check {variable}: ")
    else:
        assert "(heroku stack)" in problem.fix


@pytest.mark.parametrize(
    "exc",
    [ImportError("No module named 'foo'"), ValueError("libpq.so.5: file too short"), KeyError()],
)
def test_other_failures_are_not_library_problems(exc: Exception) -> None:
    assert unloadable_library(exc, {"LD_LIBRARY_PATH": "/tmp/x"}) is None
