"""The guest's ssh port on a UNIX socket in the sandbox, and as an ssh ProxyCommand.

QEMU's user-mode network of the job's VM gets a host forward of guest port 22 bound to the
loopback address only, on a port the kernel picks (HMP ``hostfwd_add hostnetN
tcp:127.0.0.1:0-:22`` through the job's own libvirt session, read back from ``info usernet``).
:func:`serve` accepts connections on a UNIX socket in the sandbox (mode 0600: only the job's
user) and joins each to that port; :func:`proxy_stdio` joins standard input and output to it.
Nothing listens beyond loopback, and nothing outlives the guest: both end when it stops.
"""

from __future__ import annotations

import os
import re
import select
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from lxml import etree

from ..errors import ControlError

SOCKET_NAME = "vm-ssh.sock"
SSH_PORT = 22
ACCEPT_SECONDS = 1.0
LINGER_SECONDS = 0.5
_HOST_FORWARD = re.compile(r"TCP\[HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)\s+\S+\s+(\d+)")


def forwarded_port(usernet: str, guest_port: int) -> int | None:
    """The loopback port already forwarded to ``guest_port``, from HMP ``info usernet``.

    >>> info = '''Hub -1 (hostnet0):
    ...   Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
    ...   TCP[HOST_FORWARD]  20       127.0.0.1 46463       10.0.2.15    22     0     0'''
    >>> forwarded_port(info, 22), forwarded_port(info, 80)
    (46463, None)
    """
    for host_port, port in _HOST_FORWARD.findall(usernet):
        if int(port) == guest_port:
            return int(host_port)
    return None


def user_netdev(domain_xml: str) -> str:
    """QEMU's id of the first user-mode NIC's network backend (libvirt calls it ``host`` + alias)."""
    root = etree.fromstring(domain_xml.encode())
    for interface in root.findall("devices/interface"):
        alias = interface.find("alias")
        if interface.get("type") == "user" and alias is not None:
            return "host" + alias.get("name")
    raise ControlError("the VM has no user-mode network interface to forward ssh through")


def forward(domain, guest_port: int = SSH_PORT) -> int:
    """A loopback port of this host forwarded to the guest's ``guest_port`` (reused when present)."""
    import libvirt
    import libvirt_qemu

    def hmp(command: str) -> str:
        try:
            return libvirt_qemu.qemuMonitorCommand(domain, command,
                                                   libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
        except libvirt.libvirtError as exc:
            raise ControlError(f"cannot set up the ssh forward: {exc.get_error_message()}") from None

    netdev = user_netdev(domain.XMLDesc())
    port = forwarded_port(hmp("info usernet"), guest_port)
    if port is None:
        answer = hmp(f"hostfwd_add {netdev} tcp:127.0.0.1:0-:{guest_port}").strip()
        if answer:
            raise ControlError(f"cannot set up the ssh forward: {answer}")
        port = forwarded_port(hmp("info usernet"), guest_port)
    if port is None:
        raise ControlError("QEMU did not report the forwarded port")
    return port


def _pump(source: socket.socket | int, target: socket.socket | int, ended: threading.Event | None = None) -> None:
    """Copy bytes one way until end of file, then pass the end on (and set ``ended``)."""
    try:
        while True:
            data = source.recv(65536) if isinstance(source, socket.socket) else os.read(source, 65536)
            if not data:
                break
            if isinstance(target, socket.socket):
                target.sendall(data)
            else:
                os.write(target, data)
    except OSError:
        pass
    try:
        if isinstance(target, socket.socket):
            target.shutdown(socket.SHUT_WR)
        else:
            os.close(target)
    except OSError:
        pass
    if ended is not None:
        ended.set()


def _join(client: socket.socket, port: int) -> None:
    """Relay one connection to the loopback ``port``.  Once one side has ended, the other gets
    ``LINGER_SECONDS`` to finish (as socat does), then both are closed: a client such as
    ``nc -U`` waits for a full close, not just the end of what the guest sends."""
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    ended = threading.Event()
    pumps = [threading.Thread(target=_pump, args=pair + (ended,), daemon=True)
             for pair in ((client, upstream), (upstream, client))]
    for pump in pumps:
        pump.start()
    ended.wait()
    for pump in pumps:
        pump.join(LINGER_SECONDS)
    for end in (client, upstream):
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    for pump in pumps:
        pump.join()
    client.close()
    upstream.close()


def serving(path: Path) -> bool:
    """Whether a forwarder already listens on the UNIX socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:  # nobody listens (or the path is too long for a socket address)
            return False
    return True


def serve(path: Path, port: int, running: Callable[[], bool], ready: Callable[[], None] = lambda: None) -> None:
    """Relay connections on the UNIX socket ``path`` to the loopback ``port`` until the guest stops."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    os.chdir(path.parent)  # bind a short relative name: sandbox paths can exceed sun_path
    old_umask = os.umask(0o177)
    try:
        Path(path.name).unlink(missing_ok=True)
        listener.bind(path.name)
    finally:
        os.umask(old_umask)
    listener.listen(16)
    ready()
    try:
        while running():
            readable, _, _ = select.select([listener], [], [], ACCEPT_SECONDS)
            if readable:
                client, _ = listener.accept()
                threading.Thread(target=_join, args=(client, port), daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
        Path(path.name).unlink(missing_ok=True)


def proxy_stdio(port: int) -> None:
    """Join standard input and output to the loopback ``port`` (an ssh ProxyCommand)."""
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as exc:
        raise ControlError(f"cannot reach the guest's ssh port: {exc.strerror}") from None
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, sys.stdout.fileno()), daemon=True)
    back.start()
    _pump(sys.stdin.fileno(), upstream)
    back.join()
    upstream.close()
