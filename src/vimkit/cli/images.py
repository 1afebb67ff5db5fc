"""``vimkit images add|list|show|delete|build-test-guest``: the software image registry
(``/admin/v1/images``, admin scope; docs/images.md)."""

from __future__ import annotations

import subprocess
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from vimkit.cli.context import CliError, Ctx, command, err, parse_pairs

images_app = typer.Typer(help="Software images: what a compute's vcImageId names (admin).", no_args_is_help=True)
IMAGE_COLUMNS = [("ID", "imageId"), ("NAME", "name"), ("KIND", "kind"), ("SIZE", "sizeBytes"),
                 ("PUBLIC", "isPublic"), ("GROUP", "resourceGroupId"), ("SHA256", "checksum/value")]


class Kind(str, Enum):
    KERNEL_INITRD = "KERNEL_INITRD"
    DISK = "DISK"


def _absolute(path: Optional[Path]) -> Optional[str]:
    # The VIM reads the files on its own host: a relative path means the caller's directory.
    return str(path.expanduser().resolve()) if path is not None else None


def _register(ctx: Ctx, name: str, kind: Kind, image_id: Optional[str], directory: Optional[Path],
              kernel: Optional[Path], initrd: Optional[Path], disk: Optional[Path], kernel_image: Optional[str],
              public: bool, group: Optional[str], metadata: dict[str, str]) -> dict:
    body = {"name": name, "kind": kind.value, "imageId": image_id, "directory": _absolute(directory),
            "kernelPath": _absolute(kernel), "initrdPath": _absolute(initrd), "diskPath": _absolute(disk),
            "kernelImageId": kernel_image, "isPublic": public, "resourceGroupId": group, "metadata": metadata}
    return ctx.client().admin.images.create({key: value for key, value in body.items() if value not in (None, {})})


@command(images_app, "add")
def images_add(
    ctx: Ctx,
    name: str = typer.Argument(..., help="Image name."),
    kind: Kind = typer.Option(Kind.KERNEL_INITRD, "--kind", help="KERNEL_INITRD or DISK.", case_sensitive=False),
    image_id: Optional[str] = typer.Option(None, "--id", help="The id computes give as vcImageId (default a UUID)."),
    directory: Optional[Path] = typer.Option(None, "--dir", help="Directory with vmlinuz + initramfs.img, or one disk image."),
    kernel: Optional[Path] = typer.Option(None, "--kernel", help="Kernel file (KERNEL_INITRD)."),
    initrd: Optional[Path] = typer.Option(None, "--initrd", help="Initramfs file (KERNEL_INITRD)."),
    disk: Optional[Path] = typer.Option(None, "--disk", help="qcow2 or raw disk image (DISK)."),
    kernel_image: Optional[str] = typer.Option(None, "--kernel-image", help="DISK: boot with this KERNEL_INITRD image."),
    public: bool = typer.Option(False, "--public", help="Usable by every resource group."),
    group: Optional[str] = typer.Option(None, "--group", help="Owner resource group (default yours)."),
    metadata: Optional[list[str]] = typer.Option(None, "--metadata", "-m", help="KEY=VALUE, repeatable."),
) -> None:
    """Register an image from files on the VIM's host (checksums are computed by the VIM)."""
    ctx.emit(_register(ctx, name, kind, image_id, directory, kernel, initrd, disk, kernel_image, public, group,
                       parse_pairs(metadata)))


@command(images_app, "list")
def images_list(ctx: Ctx, filter: Optional[str] = typer.Option(None, "--filter", "-f",
                                                                help="SOL 013 filter, e.g. '(eq,kind,DISK)'.")) -> None:
    """List the images, all pages."""
    ctx.emit(list(ctx.client().admin.images.list(filter)), IMAGE_COLUMNS)


@command(images_app, "show")
def images_show(ctx: Ctx, image_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Show one image."""
    ctx.emit(ctx.client().admin.images.get(image_id))


@command(images_app, "delete")
def images_delete(ctx: Ctx, image_ids: list[str] = typer.Argument(..., metavar="ID...")) -> None:
    """Unregister images (refused while a compute uses one); their files stay."""
    for image_id in image_ids:
        ctx.client().admin.images.delete(image_id)
        ctx.done(f"image {image_id} deleted")


def guest_script() -> Path:
    """scripts/build-test-guest.sh of the source tree vimkit runs from."""
    import vimkit

    for parent in Path(vimkit.__file__).resolve().parents:
        candidate = parent / "scripts" / "build-test-guest.sh"
        if candidate.is_file():
            return candidate
    raise CliError("scripts/build-test-guest.sh is not found: build-test-guest needs a source checkout of vimkit")


@command(images_app, "build-test-guest")
def images_build_test_guest(
    ctx: Ctx,
    directory: Path = typer.Argument(..., help="Where to build (vmlinuz, initramfs.img, guest.json; cached)."),
    register: Optional[str] = typer.Option(None, "--register", help="Then register it under this image id."),
    public: bool = typer.Option(True, "--public/--private", help="With --register: usable by every group."),
) -> None:
    """Build the tiny test guest (a Debian kernel + a busybox initramfs, from Debian packages) with
    scripts/build-test-guest.sh, and optionally register it as a KERNEL_INITRD image."""
    script = guest_script()
    err.print(f"building the test guest in {directory} …", highlight=False)
    result = subprocess.run([str(script), str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        raise CliError(f"build-test-guest failed: {(result.stderr or result.stdout).strip()[-500:]}", 1)
    err.print(result.stdout.strip(), highlight=False)
    if register is not None:
        ctx.emit(_register(ctx, register, Kind.KERNEL_INITRD, register, directory, None, None, None, None, public,
                           None, {"builtBy": "vimkit images build-test-guest"}))
    else:
        ctx.done(f"test guest in {directory.resolve()}")
