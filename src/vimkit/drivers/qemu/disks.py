"""New qcow2 files (root disks, overlays, volumes) without a ``qemu-img`` process for each.

An empty qcow2 image, or an overlay whose header only names its backing file, holds nothing that
differs between two creations with the same arguments (no UUID, no timestamp): ``qemu-img create``
twice gives byte-identical files. So ``qemu-img`` makes the first file of each kind and its bytes
(≈ 200 KB) are kept in memory; later files of that kind are written from them. On a host whose
cores are busy with booting guests a ``qemu-img`` process cost 30–130 ms per boot; the write is a
fraction of a millisecond. Nothing is cached on disk: no stray files when the VIM goes.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from pathlib import Path

from vimkit.drivers.qemu.host import run

#: Kinds of file remembered (flavour disk sizes × backing images in use): ≈ 200 KB each.
MAX_TEMPLATES = 32
_templates: OrderedDict[tuple[object, ...], bytes] = OrderedDict()


async def create_qcow2(qemu_img: str, path: Path, size: str | None, backing: str | None = None,
                       backing_format: str | None = None) -> None:
    """What ``qemu-img create -f qcow2 [-b backing -F backing_format] path [size]`` makes.
    Raises :class:`~vimkit.drivers.qemu.host.CommandError` as qemu-img would (e.g. an overlay
    smaller than its backing image)."""
    options = ["-b", backing, "-F", backing_format or "raw"] if backing else []
    if backing and not os.path.isabs(backing):
        # qemu-img resolves a relative backing file from the new file's directory: no sharing.
        await run(qemu_img, "create", "-q", "-f", "qcow2", *options, str(path), *([size] if size else []))
        return
    key: tuple[object, ...] = (qemu_img, *options, size or "")
    if backing:
        # Without a size the overlay takes the backing file's: a replaced image is a new kind.
        stat = os.stat(backing)
        key += (stat.st_size, stat.st_mtime_ns)
    data = _templates.get(key)
    if data is None:
        with tempfile.TemporaryDirectory(prefix="vimkit-qcow2-") as work:
            template = Path(work) / "template.qcow2"
            await run(qemu_img, "create", "-q", "-f", "qcow2", *options, str(template), *([size] if size else []))
            data = template.read_bytes()
        _templates[key] = data
        while len(_templates) > MAX_TEMPLATES:
            _templates.popitem(last=False)
    else:
        _templates.move_to_end(key)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
