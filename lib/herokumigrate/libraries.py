"""Shared libraries the runner loads (libpq through psycopg, libssl through `ssl`, ...): one that
cannot be loaded is a problem of the environment the runner was started in, not a bug, and is
reported with the variable to check.

The dynamic loader finds a library through LD_LIBRARY_PATH and LD_PRELOAD before the system's
folders: a folder on them holding a libpq.so.5 built for another system, or something that is no
library at all, breaks every command.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from herokumigrate.errors import BadInput

LOADER_VARIABLES = ("LD_LIBRARY_PATH", "LD_PRELOAD")
# What the loader (dlopen, through ctypes or an extension module's import) says: `libpq.so.5:
# file too short`, `cannot open shared object file`, `wrong ELF class`, `undefined symbol`,
# `version 'OPENSSL_3.0.0' not found`; and psycopg's own line when it finds no libpq at all.
_LIBRARY = re.compile(r"((?:/[^\s:]+/)?lib[\w.+-]*\.so[.\d]*)\s*:\s*(.+?)(?=\s-\s|$)")
_NO_LIBPQ = "libpq library not found"


def unloadable_library(exc: BaseException, env: Mapping[str, str]) -> BadInput | None:
    """The explained failure when `exc` says a shared library could not be loaded; None when it
    is about something else."""
    if not isinstance(exc, (ImportError, OSError)):
        return None
    text = " ".join(str(exc).split())
    found = _LIBRARY.search(text)
    if found is not None:
        library, why = found.group(1), found.group(2).strip()
    elif _NO_LIBPQ in text:
        library, why = "libpq.so.5", "not found"
    else:
        return None
    name = library.rsplit("/", 1)[-1]
    set_here = [var for var in LOADER_VARIABLES if env.get(var, "").strip()]
    if set_here:
        where = " and ".join(set_here)
        return BadInput(
            f"heroku-migrate cannot load the shared library {name} ({library}: {why}).",
            details=(
                f"{where} is set, and the loader looks there before the system's folders: this "
                "comes from the environment, not from your migrations.",
            ),
            fix=f"Check {where}: remove the folder or library that does not suit this system "
            f"(heroku config:unset {set_here[0]} if it is a config var), then run again.",
        )
    return BadInput(
        f"heroku-migrate cannot load the shared library {name} ({library}: {why}).",
        details=("The system lacks it, or has a broken copy: this comes from the environment.",),
        fix=f"Run on a supported stack, whose images have {name} (heroku stack), or install it; "
        "LD_LIBRARY_PATH can point at a folder that holds a working copy.",
    )
