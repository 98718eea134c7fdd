"""Which clients a local HTTP server (``userloop serve``, ``userloop view``) answers: the Host and Origin checks.

A web page the user visits can send requests to a server on 127.0.0.1: a cross-site "simple" request
(a form or ``text/plain`` POST needs no CORS preflight, and its side effects happen even though the page
cannot read the answer) or, after DNS rebinding, a same-origin one under the attacker's host name. So
:class:`ClientCheck` refuses a request whose ``Host`` names neither a loopback name (``localhost``,
``127.0.0.1``, ``[::1]``), the address the connection arrived on, nor an allowed host (HTTP 421), and
a request whose ``Origin`` is neither its own host nor an allowed origin (HTTP 403). Ports are not
compared (an SSH tunnel may forward another port). Clients that are not browsers (curl, the openai
client) send the server's address as ``Host`` and no ``Origin``, so they pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from userloop.errors import UserError

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(:\d+)?")
_ORIGIN = re.compile(r"(https?)://(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(:\d+)?")


@dataclass(frozen=True)
class Refusal:
    """Why a request is not answered: the HTTP status and one line for the client."""

    status: int
    message: str


class ClientCheck:
    """The Host and Origin checks of a local server; ``allowed_hosts`` (names, a port is ignored) and
    ``allowed_origins`` (``http(s)://HOST[:PORT]``) add to what is accepted. A bad value is a :class:`UserError`."""

    def __init__(self, allowed_hosts: Iterable[str] = (), allowed_origins: Iterable[str] = ()) -> None:
        self.allowed_hosts = frozenset(_allowed_host(value) for value in allowed_hosts)
        self.allowed_origins = frozenset(_allowed_origin(value) for value in allowed_origins)

    def refusal(self, host: str | None, origin: str | None, local_address: str | None) -> Refusal | None:
        """Why a request with these ``Host`` and ``Origin`` headers, arriving on ``local_address`` (the
        server's side of the connection), is refused; ``None`` when it may be answered."""
        if host is not None and not self._accepts_host(host, local_address):
            return Refusal(421, f"Host {host!r} is not a name of this server (it answers localhost, 127.0.0.1, "
                                "[::1] and the address it listens on); to reach it under another name, "
                                "start it with --allowed-host NAME")
        if origin is not None and origin.lower() not in self.allowed_origins and not _same_origin(origin, host):
            return Refusal(403, f"cross-origin request from {origin!r} refused; to let that web page call this "
                                f"server, start it with --allowed-origin {origin}")
        return None

    def _accepts_host(self, host: str, local_address: str | None) -> bool:
        match = _HOST.fullmatch(host.strip().lower())
        if match is None:
            return False
        name = match[1].removesuffix(".")
        return name in LOOPBACK_NAMES or name in self.allowed_hosts or name == _address_name(local_address)


def _same_origin(origin: str, host: str | None) -> bool:
    """Whether ``origin`` is the page's own server: scheme http(s) and the same host and port as ``Host``."""
    match = _ORIGIN.fullmatch(origin.strip().lower())
    return match is not None and host is not None and f"{match[2]}{match[3] or ''}" == host.strip().lower()


def _address_name(address: str | None) -> str | None:
    """A socket address as a Host name: IPv6 in brackets, an IPv4-mapped IPv6 address as IPv4."""
    if not address:
        return None
    address = address.lower().removeprefix("::ffff:") if "." in address else address.lower()
    return f"[{address}]" if ":" in address else address


def _allowed_host(value: str) -> str:
    text = value.strip().lower()
    if text.count(":") > 1 and not text.startswith("["):
        text = f"[{text}]"  # a bare IPv6 address
    match = _HOST.fullmatch(text)
    if match is None:
        raise UserError(f"--allowed-host takes a host name or address such as my-gpu-box or 10.0.0.5, got {value!r}")
    return match[1].removesuffix(".")


def _allowed_origin(value: str) -> str:
    text = value.strip().lower().removesuffix("/")
    if _ORIGIN.fullmatch(text) is None:
        raise UserError(f"--allowed-origin takes a web origin such as http://localhost:3000 (scheme, host, "
                        f"optional port; no path), got {value!r}")
    return text
