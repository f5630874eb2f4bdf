"""A network that can be cut without closing anything: the runner runs in its own network
namespace, joined to ours by a veth pair, and reaches the server through a small TCP proxy
listening on our end of the pair. `cut()` takes our end of the link down: from then on the
runner's packets (its statements, TCP keepalive probes, cancel requests) are dropped without a
reply, as a dead NAT entry or a network partition drops them, while the proxy keeps the
server's side of every connection open. `heal()` brings the link back.

Needs root and `ip` with veth support; `available()` says whether this machine has them.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import threading
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from support import Server


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def _mac(interface: str, netns: str | None = None) -> str:
    inside = ("ip", "netns", "exec", netns) if netns else ()
    shown = subprocess.run([*inside, "ip", "-o", "link", "show", interface], check=True,
                           capture_output=True, text=True, timeout=10).stdout  # fmt: skip
    return shown.split("link/ether ", 1)[1].split()[0]


def available() -> str | None:
    """None when a namespace and a veth pair can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    name = f"hmchk{os.getpid() % 100000}"
    try:
        _ip("link", "add", name, "type", "veth", "peer", "name", name + "p")
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create a veth pair: {exc}"
    _ip("link", "del", name)
    return None


class Netsplit:
    """A namespace for the runner, a link to it that can be cut, and a proxy to `server`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        tag = f"{os.getpid() % 10000}{random.randrange(1000)}"
        self.netns = f"hmnet{tag}"
        self.host_if = f"hmh{tag}"
        net = f"10.{random.randrange(100, 250)}.{random.randrange(0, 250)}"
        self.host_ip, self.inner_ip = f"{net}.1", f"{net}.2"
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()
        _ip("netns", "add", self.netns)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", "eth0", "netns",
                self.netns)  # fmt: skip
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            inside = ("netns", "exec", self.netns, "ip")
            _ip(*inside, "addr", "add", f"{self.inner_ip}/30", "dev", "eth0")
            _ip(*inside, "link", "set", "eth0", "up")
            _ip(*inside, "link", "set", "lo", "up")
            # Fixed neighbours on both sides: a cut link then drops packets without a word,
            # instead of failing the address lookup ("No route to host") as a lost LAN does.
            _ip(*inside, "neigh", "replace", self.host_ip, "lladdr", _mac(self.host_if),
                "nud", "permanent", "dev", "eth0")  # fmt: skip
            inner_mac = _mac("eth0", self.netns)
            _ip("neigh", "replace", self.inner_ip, "lladdr", inner_mac, "nud", "permanent",
                "dev", self.host_if)  # fmt: skip
            self._listener = socket.create_server((self.host_ip, 0))
        except BaseException:
            self.close()
            raise
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def prefix(self) -> tuple[str, ...]:
        """The command prefix that runs a program in the runner's namespace."""
        return ("ip", "netns", "exec", self.netns)

    def url(self, dbname: str) -> str:
        """The test role's URL of `dbname`, through the proxy."""
        from support import TEST_PASSWORD, TEST_ROLE

        auth = f"{quote(TEST_ROLE, safe='')}:{quote(TEST_PASSWORD, safe='')}"
        return f"postgres://{auth}@{self.host_ip}:{self.port}/{dbname}"

    def cut(self) -> None:
        """Drop every packet between the runner and us from now on; nothing is closed."""
        _ip("link", "set", self.host_if, "down")

    def heal(self) -> None:
        """Carry packets again."""
        _ip("link", "set", self.host_if, "up")

    def close(self) -> None:
        """Remove the namespace and the link, close the proxy's sockets."""
        self._closed.set()
        for sock in [getattr(self, "_listener", None), *self._sockets]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            _ip("link", "del", self.host_if)
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            _ip("netns", "del", self.netns)

    def __enter__(self) -> Netsplit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _server_socket(self) -> socket.socket:
        admin = self.server.admin
        host, port = admin.get("host", "127.0.0.1"), int(admin.get("port", "5432"))
        if host.startswith("/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(f"{host}/.s.PGSQL.{port}")
            return sock
        return socket.create_connection((host, port))

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = self._server_socket()
            except OSError:
                client.close()
                continue
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        # One side ended: end the other (a cut link ends nothing, so nothing ends here then).
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
