"""Real VMs under QEMU: skipped, with the reason, where QEMU, root or the test guest is missing.

The guest is built once into ``VIMKIT_TEST_GUEST_DIR`` (default ``~/.cache/vimkit/test-guest``)
by scripts/build-test-guest.sh, which does nothing when it is up to date. Every driver a test
makes is torn down in a ``finally``: its VMs killed, its namespace deleted, its files removed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUEST_DIR = Path(os.environ.get("VIMKIT_TEST_GUEST_DIR", Path.home() / ".cache" / "vimkit" / "test-guest"))
BOOT_TIMEOUT = float(os.environ.get("VIMKIT_TEST_BOOT_TIMEOUT", "120"))


def _unavailable() -> str | None:
    try:
        import pycdlib  # noqa: F401
        import qemu.qmp  # noqa: F401  (the extra is installed)
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[qemu]')"
    for tool in ("qemu-system-x86_64", "qemu-img", "ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install qemu-system-x86 qemu-utils iproute2)"
    if os.geteuid() != 0:
        return "network namespaces and taps need root"
    return None


# scripts/test.sh sets it: there the QEMU tests must run, so what would skip them fails them.
REQUIRE_QEMU = os.environ.get("VIMKIT_TEST_REQUIRE_QEMU") == "1"


def _skip(reason: str) -> None:
    if REQUIRE_QEMU:
        pytest.fail(f"VIMKIT_TEST_REQUIRE_QEMU is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def guest_dir() -> Path:
    reason = _unavailable()
    if reason:
        _skip(reason)
    result = subprocess.run([str(ROOT / "scripts" / "build-test-guest.sh"), str(GUEST_DIR)],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        _skip(f"cannot build the test guest: {result.stderr.strip()[-300:]}")
    return GUEST_DIR


def qemu_pids(marker: str) -> list[int]:
    """QEMU processes whose command line contains ``marker`` (a compute id or a state dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if b"qemu-system" in cmdline and marker.encode() in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(int(entry.name))
    return pids


def kill_leftovers(state_dir: Path, namespace: str) -> None:
    """The safety net behind the driver's own cleanup: only our processes, only our namespace."""
    for pid in qemu_pids(str(state_dir)):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
    shutil.rmtree(Path("/run") / namespace, ignore_errors=True)


def run_driver(state_dir: Path, guest: Path, scenario: Callable[[Any], Awaitable[None]], **options: Any) -> None:
    from vimkit.drivers.qemu import QemuConfig, QemuDriver

    config = QemuConfig(state_dir=state_dir, guest_dir=guest, accel="tcg", boot_timeout=BOOT_TIMEOUT,
                        stop_timeout=options.pop("stop_timeout", 2.0), max_concurrent_boots=2, **options)

    async def main() -> None:
        driver = QemuDriver(config)
        try:
            await driver.start()
            await scenario(driver)
        finally:
            try:
                await driver.destroy_all()
            finally:
                await driver.close()

    try:
        asyncio.run(main())
    finally:
        kill_leftovers(state_dir, config.netns)
