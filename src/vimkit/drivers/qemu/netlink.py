"""A port's tap made in-process: ``ip tuntap add`` + ``ip link set … mtu … master … up`` as two
ioctls and one netlink message, made by the calling thread after entering the VIM's network
namespace, which it leaves again before returning.

Why not ``ip``: on a host whose cores are busy with booting TCG guests each ``ip`` process waited
40–120 ms for the CPU (fork, exec, dynamic linking, exit, each a scheduling point) for a few
microseconds of kernel work. Why the event loop's own thread and not a helper thread: ``setns(2)``
moves only the calling thread, so a helper would do; but it needs the GIL back after each of its
ten system calls, and while the loop is busy serving requests each of those waits up to a switch
interval (5 ms): 50–300 ms per tap under load, against well under a millisecond inline. Nothing
else runs on the loop's thread between entering and leaving (no ``await`` in between), so no other
socket of the VIM can be opened in the namespace.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000          # what `ip tuntap add mode tap` asks for: no packet-information header
IFF_UP = 0x1
RTM_SETLINK = 19
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
IFLA_MTU, IFLA_MASTER = 4, 10

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns {what}: {os.strerror(code)}")


@contextmanager
def inside(netns_path: str) -> Iterator[None]:
    """The calling thread in the namespace at ``netns_path`` for the block, then back where it was."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, netns_path)
        finally:
            os.close(target)
        try:
            yield
        finally:
            # Cannot fail for root with an open descriptor of a live namespace; if it ever did, the
            # thread must not carry on in the wrong namespace.
            try:
                _setns(home, "back to the VIM's namespace")
            except OSError as exc:
                raise SystemExit(f"vimkit: {exc}") from exc
    finally:
        os.close(home)


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _set_link(index: int, mtu: int, master: int) -> None:
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
    body += _attr(IFLA_MTU, struct.pack("=I", mtu)) + _attr(IFLA_MASTER, struct.pack("=I", master))
    message = struct.pack("=IHHII", 16 + len(body), RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, 1, 0) + body
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        # The kernel answers at once; a bound keeps a surprise from freezing the event loop.
        sock.settimeout(2.0)
        sock.bind((0, 0))
        sock.send(message)
        while True:
            answer = sock.recv(65536)
            offset = 0
            while offset + 16 <= len(answer):
                length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", answer, offset)
                if kind == NLMSG_ERROR and seq == 1:
                    code = -struct.unpack_from("=i", answer, offset + 16)[0]
                    if code:
                        raise OSError(code, f"setting link {index}: {os.strerror(code)}")
                    return
                offset += max(16, (length + 3) & ~3)


def create_tap(netns_path: str, tap: str, bridge: str, mtu: int) -> None:
    """A persistent tap ``tap`` in the namespace, up, with ``mtu``, enslaved to ``bridge``. A tap
    that exists already (in use by a QEMU process: EBUSY) is only configured."""
    with inside(netns_path):
        master = socket.if_nametoindex(bridge)
        request = struct.pack("16sH22x", tap.encode(), IFF_TAP | IFF_NO_PI)
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            try:
                fcntl.ioctl(fd, TUNSETIFF, request)
                fcntl.ioctl(fd, TUNSETPERSIST, 1)
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
        finally:
            os.close(fd)
        _set_link(socket.if_nametoindex(tap), mtu, master)
