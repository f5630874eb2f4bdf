"""The pinned wheels' integrity: a download or a cached file that does not match its pin's
sha256 never reaches the slug. Served from a loopback HTTP server, no PyPI involved."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from herokumigrate.buildpack import BuildFailed, wheels
from herokumigrate.output import Output

GOOD = b"PK\x03\x04 the wheel as published"
FILENAME = "demo-1.0-py3-none-any.whl"


class _Files(http.server.BaseHTTPRequestHandler):
    served: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.served.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict[str, bytes]]]:
    """A loopback HTTP server: its base URL, and the files it serves by path."""
    monkeypatch.setenv("no_proxy", "*")  # the machine's proxy must not see loopback requests
    monkeypatch.setattr(wheels, "DOWNLOAD_ATTEMPTS", 1)
    served: ClassVar[dict[str, bytes]] = {}
    handler = type("Handler", (_Files,), {"served": served})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{FILENAME}"


def _pin(url: str, content: bytes = GOOD) -> wheels.PinnedWheel:
    return wheels.PinnedWheel("demo", "1.0", hashlib.sha256(content).hexdigest(), url)


def _output() -> tuple[Output, io.StringIO]:
    stream = io.StringIO()
    return Output(stream, stream, color=False), stream


def test_a_download_with_the_wrong_digest_fails_and_leaves_nothing_in_the_cache(
    index: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    base, served = index
    served[f"/{FILENAME}"] = b"PK\x03\x04 altered on the way"
    out, _ = _output()
    with pytest.raises(BuildFailed) as failure:
        wheels.fetch(_pin(f"{base}/{FILENAME}"), tmp_path / "wheels", out)
    assert failure.value.message.startswith(f"Downloaded {FILENAME} has sha256 ")
    assert hashlib.sha256(GOOD).hexdigest() in failure.value.message
    assert list((tmp_path / "wheels").iterdir()) == []


def test_a_download_with_the_right_digest_is_kept(
    index: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    base, served = index
    served[f"/{FILENAME}"] = GOOD
    out, stream = _output()
    path = wheels.fetch(_pin(f"{base}/{FILENAME}"), tmp_path / "wheels", out)
    assert path == tmp_path / "wheels" / FILENAME
    assert path.read_bytes() == GOOD
    assert "demo 1.0 (downloaded" in stream.getvalue()
    assert sorted(p.name for p in (tmp_path / "wheels").iterdir()) == [FILENAME]


def test_a_corrupted_cached_wheel_is_downloaded_again(
    index: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    base, served = index
    served[f"/{FILENAME}"] = GOOD
    cache = tmp_path / "wheels"
    cache.mkdir()
    (cache / FILENAME).write_bytes(GOOD[:-3])
    out, stream = _output()
    path = wheels.fetch(_pin(f"{base}/{FILENAME}"), cache, out)
    assert path.read_bytes() == GOOD
    assert f" !     Cached {FILENAME} does not match its sha256; downloading it again." in (
        stream.getvalue()
    )


def test_a_corrupted_cached_wheel_fails_clearly_when_offline(tmp_path: Path) -> None:
    cache = tmp_path / "wheels"
    cache.mkdir()
    (cache / FILENAME).write_bytes(GOOD[:-3])
    out, _ = _output()
    pin = _pin(_closed_port_url())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("no_proxy", "*")
        patch.setattr(wheels, "DOWNLOAD_ATTEMPTS", 1)
        with pytest.raises(BuildFailed) as failure:
            wheels.fetch(pin, cache, out)
    assert failure.value.message.startswith(f"Could not download {FILENAME} after 1 attempts")
    assert list(cache.iterdir()) == []  # the corrupted file is not left to be trusted later


def test_a_cached_wheel_matching_its_pin_is_used_without_the_network(tmp_path: Path) -> None:
    cache = tmp_path / "wheels"
    cache.mkdir()
    (cache / FILENAME).write_bytes(GOOD)
    out, stream = _output()
    path = wheels.fetch(_pin(_closed_port_url()), cache, out)
    assert path.read_bytes() == GOOD
    assert "demo 1.0 (cached)" in stream.getvalue()


def test_a_backport_is_pinned_for_older_pythons_only(tmp_path: Path) -> None:
    pins = tmp_path / "pins.txt"
    digest = "a" * 64
    pins.write_text(
        f"psycopg 3.3.9 {digest} https://example.com/psycopg.whl\n"
        f"tomli 2.5.0 {digest} https://example.com/tomli.whl python<3.11  # a backport\n"
    )
    psycopg_pin, tomli_pin = wheels.pinned_wheels(pins)
    assert psycopg_pin.python_below is None
    assert tomli_pin.python_below == (3, 11)
    assert tomli_pin.needed_by((3, 10, 12))
    assert not tomli_pin.needed_by((3, 11, 0))
    assert psycopg_pin.needed_by((3, 14))
    pins.write_text(f"tomli 2.5.0 {digest} https://example.com/tomli.whl py<3.11\n")
    with pytest.raises(ValueError, match=r"\[python<X\.Y\]"):
        wheels.pinned_wheels(pins)


def test_the_release_python_gets_exactly_the_wheels_it_needs() -> None:
    names = [pinned.name for pinned in wheels.PINNED]
    files = [Path(f"{name}.whl") for name in names]
    on_310 = {f.stem for f in wheels.needed_by((3, 10), files)}
    on_314 = {f.stem for f in wheels.needed_by((3, 14), files)}
    assert on_310 == set(names)  # psycopg, and both backports
    assert on_314 == {"psycopg"}  # typing-extensions below 3.13, tomli below 3.11
