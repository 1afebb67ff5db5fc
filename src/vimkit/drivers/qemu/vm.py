"""One QEMU process: its command line, launch, QMP session, serial console and end.

QEMU is started with ``-daemonize``: the launching command returns once QEMU initialised (so a
bad command line fails the call at once, with QEMU's message), and the VM is not a child of the
VIM, so it keeps running while the VIM restarts — the next VIM re-attaches to its QMP socket.
The serial console is a socket (for a person to attach to) whose output QEMU also appends to
``serial.log`` whether or not anyone is attached: the ready marker is read from there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from vimkit.drivers.model import DriverError, DriverErrorCode
from vimkit.drivers.qemu.config import MIN_MEMORY_MB, READY_MARKER, QemuConfig, accel_args
from vimkit.drivers.qemu.disks import create_qcow2
from vimkit.drivers.qemu.host import CommandError, Namespace, pid_alive, run, short
from vimkit.drivers.qemu.state import VmRecord

log = logging.getLogger("vimkit.drivers.qemu")


@dataclass(frozen=True, slots=True)
class NicWiring:
    port_id: str
    tap: str
    mac: str
    cmdline: str          # "<mac>,<addr/len>[,<gateway>]" for the guest's init


@dataclass(frozen=True, slots=True)
class DiskWiring:
    volume_id: str
    path: str


def node_name(volume_id: str) -> str:
    # QMP ids must start with a letter and stay short; volume ids are UUIDs.
    return "v" + volume_id.replace("-", "")[:24]


def disk_serial(volume_id: str) -> str:
    """The virtio-blk serial a guest finds a volume by (``/sys/block/vdX/serial``, udev's
    ``/dev/disk/by-id/virtio-<serial>``): its name ``/dev/vdX`` follows the guest's probe order,
    which Linux does not promise. virtio-blk keeps 20 bytes, as Nova's serials do; a comma would
    end QEMU's option."""
    return "".join(c for c in volume_id if c.isalnum() or c in "-_.")[:20]


def nic_id(port_id: str) -> str:
    return "n" + port_id.replace("-", "")[:24]


class Vm:
    """The files and the process of one compute (``<state_dir>/vms/<compute id>/``)."""

    def __init__(self, record: VmRecord, config: QemuConfig, namespace: Namespace, accel: str) -> None:
        self.record = record
        self.config = config
        self.namespace = namespace
        self.accel = accel
        self.dir = config.state_dir / "vms" / record.compute_id
        self.qmp: QMPClient | None = None
        self.expect_exit = False   # set while the VIM itself ends the process: not a crash

    @property
    def compute_id(self) -> str:
        return self.record.compute_id

    @property
    def socket_dir(self) -> Path:
        """The VM's directory, unless that makes socket paths longer than a ``sun_path`` (108
        bytes): then a short directory under /run derived from the namespace and compute ids, so
        a restarted VIM finds the sockets again."""
        if len(str(self.dir / "serial.sock")) < 100:
            return self.dir
        return Path("/run") / self.namespace.name / short(self.compute_id, 16)

    @property
    def qmp_path(self) -> Path:
        return self.socket_dir / "qmp.sock"

    @property
    def serial_path(self) -> Path:
        return self.socket_dir / "serial.sock"

    @property
    def serial_log(self) -> Path:
        return self.dir / "serial.log"

    @property
    def agent_path(self) -> Path:
        """The guest channel (the guest's ttyS1): the VIM writes requests, the guest answers."""
        return self.socket_dir / "agent.sock"

    @property
    def agent_log(self) -> Path:
        return self.dir / "agent.log"

    @property
    def config_drive(self) -> Path:
        return self.dir / "config.iso"

    @property
    def root_disk(self) -> Path:
        return self.dir / "root.qcow2"

    @property
    def marker(self) -> str:
        """What identifies this VM's process in ``/proc/<pid>/cmdline`` (pids are reused)."""
        return f"guest=vimkit-{self.compute_id}"

    def alive(self) -> bool:
        return pid_alive(self.record.pid, self.marker)

    def argv(self, nics: Sequence[NicWiring], disks: Sequence[DiskWiring]) -> list[str]:
        r = self.record
        argv = [
            self.config.qemu_binary, "-name", self.marker, *accel_args(self.accel),
            "-m", str(max(MIN_MEMORY_MB, r.memory_mb)), "-smp", str(max(1, r.vcpus)),
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
            "-chardev", f"socket,id=serial0,path={self.serial_path},server=on,wait=off,"
                        f"logfile={self.serial_log},logappend=on",
            "-serial", "chardev:serial0",
            "-chardev", f"socket,id=agent0,path={self.agent_path},server=on,wait=off,"
                        f"logfile={self.agent_log},logappend=on",
            "-serial", "chardev:agent0",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-pidfile", str(self.dir / "qemu.pid"), "-daemonize",
        ]
        if r.kernel:
            append = ["console=ttyS0", "quiet", "panic=-1", f"vimkit.id={r.compute_id}"]
            if nics:
                append.append("vimkit.net=" + ";".join(n.cmdline for n in nics))
            if self.config_drive.exists():
                append.append("vimkit.cd=1")
            argv += ["-kernel", r.kernel, "-initrd", r.initrd, "-append", " ".join(append)]
        argv += [
            "-device", "virtio-balloon-pci,id=balloon0",
            "-blockdev", f"driver=qcow2,node-name=root,file.driver=file,file.filename={self.root_disk}",
            "-device", "virtio-blk-pci,drive=root,id=root-disk" + ("" if r.kernel else ",bootindex=0"),
        ]
        if self.config_drive.exists():
            # Right after the root disk: the guest's /dev/vdb; volumes follow from /dev/vdc.
            argv += ["-blockdev", f"driver=raw,node-name=config,read-only=on,file.driver=file,"
                                  f"file.filename={self.config_drive}",
                     "-device", "virtio-blk-pci,drive=config,id=config-drive"]
        for nic in nics:
            argv += ["-netdev", f"tap,id={nic_id(nic.port_id)},ifname={nic.tap},script=no,downscript=no,vhost=off",
                     "-device", f"virtio-net-pci,netdev={nic_id(nic.port_id)},mac={nic.mac},id=dev-{nic_id(nic.port_id)}"]
        for disk in disks:
            node = node_name(disk.volume_id)
            argv += ["-blockdev", f"driver=qcow2,node-name={node},file.driver=file,file.filename={disk.path}",
                     "-device", f"virtio-blk-pci,drive={node},id=dev-{node},serial={disk_serial(disk.volume_id)}"]
        return argv

    async def ensure_root_disk(self) -> None:
        """Thin and empty, or a qcow2 overlay on the DISK image, or a copy of a compute snapshot."""
        if self.root_disk.exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        r, size = self.record, f"{max(1, self.record.disk_gb)}G"
        img = self.config.qemu_img
        if r.root_backing:
            try:
                await create_qcow2(img, self.root_disk, size, r.root_backing, r.root_backing_format or "raw")
            except CommandError:
                # The image is larger than the flavour's disk: the overlay takes the image's size.
                await create_qcow2(img, self.root_disk, None, r.root_backing, r.root_backing_format or "raw")
        elif r.root_snapshot:
            source, snapshot = r.root_snapshot
            await run(img, "convert", "-U", "-q", "-O", "qcow2", "-l", f"snapshot.name={snapshot}", source,
                      str(self.root_disk))
            await run(img, "resize", "-q", str(self.root_disk), size, check=False)
        else:
            await create_qcow2(img, self.root_disk, size)

    async def launch(self, nics: Sequence[NicWiring], disks: Sequence[DiskWiring]) -> None:
        """Start the process and attach to its QMP socket (the guest then boots on its own)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        await self.ensure_root_disk()
        for stale in (self.qmp_path, self.serial_path, self.agent_path, self.dir / "qemu.pid"):
            stale.unlink(missing_ok=True)
        command = self.argv(nics, disks)
        if self.config.qemu_nice:
            command = ["nice", "-n", str(self.config.qemu_nice), *command]
        argv = self.namespace.wrap(command)
        with (self.dir / "qemu.log").open("ab") as qemu_log:
            qemu_log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
            qemu_log.flush()
            process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                           stdout=qemu_log, stderr=qemu_log, start_new_session=True)
            code = await process.wait()
        if code != 0:
            raise DriverError(DriverErrorCode.INTERNAL,
                              f"QEMU for compute {self.compute_id} did not start: {self.log_tail()}")
        self.record.pid = int((self.dir / "qemu.pid").read_text().strip())
        self.record.epoch += 1
        self.record.boot_ports = [nic.port_id for nic in nics]
        self.expect_exit = False
        await self.connect()

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.dir / "qemu.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(line for line in text[-lines:] if not line.startswith("---")) or "no message"

    async def connect(self) -> None:
        client = QMPClient(f"vimkit-{self.compute_id[:8]}")
        for attempt in range(50):
            try:
                await client.connect(str(self.qmp_path))
                break
            except Exception as exc:  # noqa: BLE001 - the socket appears shortly after the pid file
                if attempt == 49 or not self.alive():
                    raise DriverError(DriverErrorCode.BACKEND_UNAVAILABLE,
                                      f"cannot reach QMP of compute {self.compute_id}: {exc}", retryable=True) from exc
                await asyncio.sleep(0.1)
        self.qmp = client

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        if self.qmp is None:
            await self.connect()
        assert self.qmp is not None
        try:
            return await self.qmp.execute(command, arguments)
        except Exception as exc:  # noqa: BLE001 - ExecuteError and connection errors alike
            if not self.alive():
                raise DriverError(DriverErrorCode.CONFLICT, f"compute {self.compute_id} has no running process") from exc
            raise DriverError(DriverErrorCode.INTERNAL, f"QMP {command} on {self.compute_id}: {exc}") from exc

    def log_size(self) -> int:
        try:
            return self.serial_log.stat().st_size
        except OSError:
            return 0

    async def wait_ready(self, offset: int, timeout: float) -> float:
        """Wait for the ready marker written after ``offset`` of the serial log; the seconds it took."""
        started = time.monotonic()
        needle = f"{READY_MARKER} {self.compute_id}".encode()
        seen = b""
        while True:
            try:
                # Only what was appended since the last look (keeping a needle's length of overlap).
                with self.serial_log.open("rb") as handle:
                    handle.seek(offset)
                    fresh = handle.read()
                offset += len(fresh)
                seen = seen[-len(needle):] + fresh
                if needle in seen:
                    return time.monotonic() - started
            except OSError:
                pass
            if not self.alive():
                raise DriverError(DriverErrorCode.INTERNAL,
                                  f"QEMU of compute {self.compute_id} exited while booting: {self.log_tail()}")
            if time.monotonic() - started > timeout:
                raise DriverError(DriverErrorCode.TIMEOUT,
                                  f"compute {self.compute_id} did not report ready within {timeout:.0f} s",
                                  retryable=True)
            # The marker's latency until the VIM sees it: 20 ms at most (a look costs ~50 µs).
            await asyncio.sleep(0.02)

    async def agent_request(self, line: str, answer: str, timeout: float) -> bool:
        """Write ``line`` on the guest channel and wait for a line starting with ``answer`` from
        the guest; False when none came in time (a guest without the vimkit channel)."""
        try:
            offset = self.agent_log.stat().st_size
        except OSError:
            offset = 0
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.agent_path))
        except OSError as exc:
            log.warning("guest channel of %s: %s", self.compute_id, exc)
            return False
        try:
            writer.write(f"{line}\n".encode())
            await writer.drain()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    with self.agent_log.open("rb") as handle:
                        handle.seek(offset)
                        if any(seen.strip().startswith(answer.encode()) for seen in handle.read().splitlines()):
                            return True
                except OSError:
                    pass
                await asyncio.sleep(0.1)
            return False
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 2)
            except Exception:  # noqa: BLE001 - QEMU may have closed it first
                pass

    async def wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            await asyncio.sleep(0.1)
        return not self.alive()

    async def disconnect(self) -> None:
        client, self.qmp = self.qmp, None
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), 2)
            except Exception:  # noqa: BLE001 - the peer may be gone already
                pass

    async def shutdown(self, powerdown_timeout: float) -> None:
        """ACPI powerdown, then ``quit``, then SIGKILL: a guest without an ACPI handler (the busybox
        test guest) ignores the first, a wedged QEMU the second."""
        self.expect_exit = True
        if self.alive() and powerdown_timeout > 0:
            try:
                await self.execute("system_powerdown")
            except DriverError:
                pass
            await self.wait_exit(powerdown_timeout)
        await self.kill()

    async def kill(self) -> None:
        """End the process at once (``quit``, then SIGKILL)."""
        self.expect_exit = True
        if self.alive():
            try:
                await asyncio.wait_for(self.execute("quit"), 3)
            except (DriverError, asyncio.TimeoutError):
                pass
            if not await self.wait_exit(3) and self.record.pid:
                try:
                    os.kill(self.record.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await self.wait_exit(3)
        await self.disconnect()
        self.record.pid = None
        for stale in (self.qmp_path, self.serial_path, self.agent_path, self.dir / "qemu.pid"):
            stale.unlink(missing_ok=True)
        if self.socket_dir != self.dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
