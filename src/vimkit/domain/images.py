"""The software image registry: what a compute's ``vcImageId`` names (docs/images.md).

An image is a kernel+initramfs pair (``KERNEL_INITRD``) or a disk image (``DISK``, qcow2 or raw,
optionally booted with the kernel and initramfs of a ``KERNEL_INITRD`` image: ``kernelImageId``,
as OpenStack's kernel_id/ramdisk_id). The registry references files in place on the VIM's host —
nothing is copied — and records each file's size and SHA-256 at registration, so a file changed
afterwards is detected (the QEMU driver refuses to boot it). Images are owned by a resource group;
``isPublic`` ones are usable by every group. Compute snapshots remain usable as images as before.

Seeded on a fresh database (with the flavours, ``seed_flavours``): the images the driver offers
(``default_images()``: the QEMU driver's test guest) or, for a driver without files (the
simulator), a small public catalogue of file-less placeholder images.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from vimkit.api.problems import ApiError, Cause, invalid, not_found
from vimkit.auth.principal import Principal
from vimkit.models.common import Identifier, RequestModel
from vimkit.store.compute_tables import ComputeRow
from vimkit.store.db import Database
from vimkit.store.filter_sql import FilterSchema
from vimkit.store.image_tables import ImageRow
from vimkit.store.repository import Page, PageRequest, Visibility, check_if_match, get_document, list_documents, utcnow, visibility_of

SYSTEM_GROUP = "system"
KINDS = ("KERNEL_INITRD", "DISK")
#: Names of the files in a directory given instead of paths.
KERNEL_NAMES = ("vmlinuz", "bzImage", "kernel")
INITRD_NAMES = ("initramfs.img", "initrd.img", "initrd")
DISK_SUFFIXES = (".qcow2", ".img", ".raw")
#: The catalogue seeded for drivers that have no files (the simulator): placeholders, no files.
PLACEHOLDER_IMAGES = ("ubuntu-24.04", "ubuntu", "debian-12", "cirros", "img")
QCOW2_MAGIC = b"QFI\xfb"



class ImageKind(str, Enum):
    KERNEL_INITRD = "KERNEL_INITRD"
    DISK = "DISK"


class ImageRegister(RequestModel):
    """Register an image: its files by path, or a directory holding them."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    kind: ImageKind
    imageId: Identifier | None = Field(None, description="The id computes give as vcImageId; a UUID when absent.")
    kernelPath: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    initrdPath: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    diskPath: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    directory: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        None, description="KERNEL_INITRD: a directory with vmlinuz and initramfs.img; DISK: with one "
                          "*.qcow2, *.img or *.raw file.")
    kernelImageId: Identifier | None = Field(
        None, description="DISK only: boot the disk with this KERNEL_INITRD image's kernel and initramfs.")
    isPublic: bool = Field(False, description="Usable by every resource group.")
    resourceGroupId: Identifier | None = Field(None, description="The owner; the caller's group when absent.")
    metadata: dict[Annotated[str, StringConstraints(max_length=255)],
                   Annotated[str, StringConstraints(max_length=1024)]] = Field(default_factory=dict, max_length=64)


class ImageFile(BaseModel):
    role: str = Field(description="kernel, initrd or disk.")
    path: str
    sizeBytes: int
    sha256: str
    format: str | None = Field(None, description="disk: qcow2 or raw.")


class ImageChecksum(BaseModel):
    algorithm: str
    value: str | None


class SoftwareImage(BaseModel):
    imageId: str
    name: str
    kind: ImageKind
    files: list[ImageFile]
    sizeBytes: int
    checksum: ImageChecksum = Field(description="SHA-256 over the files' SHA-256 digests, in order.")
    isPublic: bool
    resourceGroupId: str
    metadata: dict[str, str] = {}
    createdAt: str
    kernelImageId: str | None = None
    placeholder: bool | None = Field(None, description="A seeded catalogue entry without files (simulator).")


IMAGE_SCHEMA = FilterSchema.from_model(
    SoftwareImage,
    ImageRow.body,
    columns={"imageId": ImageRow.id, "name": ImageRow.name, "kind": ImageRow.kind, "isPublic": ImageRow.is_shared,
             "resourceGroupId": ImageRow.resource_group_id},
)


def sha256_of(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _file(field: str, value: str) -> Path:
    path = Path(value)
    if not path.is_absolute():
        raise invalid(field, "must be an absolute path on the VIM's host")
    try:
        regular = path.is_file()
    except OSError as exc:   # a name too long, a loop of links …
        raise invalid(field, f"not usable: {exc.strerror or exc}") from exc
    if not regular:
        raise invalid(field, f"{value} is not a file on the VIM's host")
    if not os.access(path, os.R_OK):
        raise invalid(field, f"{value} is not readable by the VIM")
    return path


def _in_directory(field: str, directory: Path, names: Iterable[str], what: str) -> Path:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise invalid(field, f"{directory} has no {what} ({', '.join(names)})")


def _directory(value: str) -> Path:
    base = Path(value)
    try:
        usable = base.is_absolute() and base.is_dir()
    except OSError:
        usable = False
    if not usable:
        raise invalid("directory", f"{value} is not an absolute path to a directory on the VIM's host")
    return base


def disk_format(path: Path) -> str:
    with path.open("rb") as handle:
        return "qcow2" if handle.read(4) == QCOW2_MAGIC else "raw"


def resolve_files(kind: str, files: dict[str, str | None], directory: str | None) -> dict[str, Path]:
    """The image's files by role (``kernel``/``initrd`` or ``disk``), each checked; 400 naming the
    request member that is wrong."""
    if directory is not None:
        if any(files.values()):
            raise invalid("directory", "give a directory or file paths, not both")
        base = _directory(directory)
        try:
            if kind == "KERNEL_INITRD":
                chosen = {"kernel": _in_directory("directory", base, KERNEL_NAMES, "kernel"),
                          "initrd": _in_directory("directory", base, INITRD_NAMES, "initramfs")}
            else:
                disks = sorted(p for p in base.iterdir() if p.is_file() and p.suffix in DISK_SUFFIXES)
        except OSError as exc:
            raise invalid("directory", f"cannot read {directory}: {exc.strerror or exc}") from exc
        if kind != "KERNEL_INITRD":
            if len(disks) != 1:
                raise invalid("directory", f"{directory} must hold exactly one disk image "
                                           f"({', '.join(DISK_SUFFIXES)}), found {len(disks)}")
            chosen = {"disk": disks[0]}
        return {role: _file("directory", str(path)) for role, path in chosen.items()}
    wanted = ("kernelPath", "initrdPath") if kind == "KERNEL_INITRD" else ("diskPath",)
    unwanted = [name for name, value in files.items() if value and name not in wanted]
    if unwanted:
        raise invalid(unwanted[0], f"not used by a {kind} image")
    resolved = {}
    for name in wanted:
        value = files.get(name)
        if not value:
            raise invalid(name, f"required for a {kind} image (or give a directory)")
        resolved[name.removesuffix("Path")] = _file(name, value)
    return resolved


def file_entries(paths: dict[str, Path], fields: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Size, SHA-256 (and a disk's format) of each file; a file that cannot be read is a 400
    naming the member that gave it (``fields``: role → member)."""
    entries = []
    for role, path in paths.items():
        try:
            entry = {"role": role, "path": str(path), "sizeBytes": path.stat().st_size, "sha256": sha256_of([path])}
            if role == "disk":
                entry["format"] = disk_format(path)
        except OSError as exc:
            raise invalid((fields or {}).get(role, role), f"cannot read {path}: {exc.strerror or exc}") from exc
        entries.append(entry)
    return entries


def image_document(image_id: str, name: str, kind: str, entries: list[dict[str, Any]], is_public: bool, group: str,
                   metadata: dict[str, str], kernel_image_id: str | None = None, created_at: str | None = None,
                   placeholder: bool = False) -> dict[str, Any]:
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(bytes.fromhex(entry["sha256"]))
    body: dict[str, Any] = {
        "imageId": image_id, "name": name, "kind": kind, "files": entries,
        "sizeBytes": sum(e["sizeBytes"] for e in entries),
        "checksum": {"algorithm": "sha256", "value": digest.hexdigest() if entries else None},
        "isPublic": is_public, "resourceGroupId": group, "metadata": dict(metadata),
        "createdAt": created_at or utcnow().isoformat().replace("+00:00", "Z"),
    }
    if kernel_image_id:
        body["kernelImageId"] = kernel_image_id
    if placeholder:
        body["placeholder"] = True
    return body


def usable_image(session: Session, visibility: Visibility, image_id: str) -> ImageRow | None:
    """The image ``image_id`` if the caller's group may boot it (its own, or public)."""
    return get_document(session, ImageRow, image_id, visibility)


class ImageService:
    """Registry operations (admin API) and the resolver the drivers use at boot."""

    def __init__(self, database: Database, infrastructure: Any = None, seed: bool = False) -> None:
        self.database = database
        driver = getattr(infrastructure, "driver", None)
        if driver is not None and hasattr(driver, "image_resolver"):
            driver.image_resolver = self.resolve  # the QEMU driver asks for an image's files at boot
        if seed:
            self.seed_defaults(driver)

    # ------------------------------------------------------------------ admin API

    def create(self, principal: Principal, data: ImageRegister) -> ImageRow:
        kind = data.kind.value
        group = data.resourceGroupId or principal.resource_group_id
        image_id = data.imageId or str(uuid.uuid4())
        paths = resolve_files(kind, {"kernelPath": data.kernelPath, "initrdPath": data.initrdPath,
                                     "diskPath": data.diskPath}, data.directory)
        if data.kernelImageId is not None and kind != "DISK":
            raise invalid("kernelImageId", "only a DISK image is booted with another image's kernel")
        fields = ({role: "directory" for role in paths} if data.directory is not None
                  else {role: f"{role}Path" for role in paths})
        entries = file_entries(paths, fields)   # hashing a large disk takes a while: outside the transaction
        with self.database.write() as session:
            if data.kernelImageId is not None:
                kernel = session.scalar(select(ImageRow).where(ImageRow.id == data.kernelImageId))
                if kernel is None or kernel.kind != "KERNEL_INITRD":
                    raise invalid("kernelImageId", f"no KERNEL_INITRD image '{data.kernelImageId}'")
                if not kernel.is_shared and kernel.resource_group_id != group:
                    raise invalid("kernelImageId", f"image '{data.kernelImageId}' belongs to another resource group")
            if session.scalar(select(ImageRow.seq).where(ImageRow.id == image_id)) is not None:
                raise ApiError(409, f"imageId '{image_id}' is already in use", invalid_params=[("imageId", "already in use")])
            now = utcnow()
            row = ImageRow(id=image_id, resource_group_id=group, created_at=now, updated_at=now, version=1,
                           name=data.name, kind=kind, is_shared=data.isPublic,
                           body=image_document(image_id, data.name, kind, entries, data.isPublic, group,
                                               data.metadata, data.kernelImageId))
            session.add(row)
        return row

    def get(self, principal: Principal, image_id: str) -> ImageRow:
        with self.database.read() as session:
            row = get_document(session, ImageRow, image_id, visibility_of(principal))
        if row is None:
            raise not_found("image", image_id)
        return row

    def list(self, principal: Principal, page: PageRequest, where: ColumnElement[bool] | None) -> Page[Any]:  # plain rows
        with self.database.read() as session:
            return list_documents(session, ImageRow, visibility_of(principal), page, where, plain=True)

    def delete(self, principal: Principal, image_id: str, if_match: str | None = None) -> ImageRow:
        with self.database.write() as session:
            row = get_document(session, ImageRow, image_id, visibility_of(principal), for_update=True)
            if row is None:
                raise not_found("image", image_id)
            check_if_match(if_match, row)
            users = list(session.scalars(select(ComputeRow.id).where(
                ComputeRow.body["vcImageId"].as_string() == image_id).limit(3)))
            if users:
                raise ApiError(409, f"image '{image_id}' is used by compute {', '.join(users)}",
                               cause=Cause.CONFLICT)
            dependants = list(session.scalars(select(ImageRow.id).where(
                ImageRow.body["kernelImageId"].as_string() == image_id).limit(3)))
            if dependants:
                raise ApiError(409, f"image '{image_id}' is the kernel of image {', '.join(dependants)}",
                               cause=Cause.CONFLICT)
            session.delete(row)
        return row

    # ------------------------------------------------------------------ drivers

    def resolve(self, image_id: str) -> dict[str, Any] | None:
        """The image's document with its kernel image's files merged in (``bootFiles``), or None
        when ``image_id`` is not a registered image (a compute snapshot, say)."""
        with self.database.read() as session:
            row = session.scalar(select(ImageRow).where(ImageRow.id == image_id))
            if row is None:
                return None
            body = dict(row.body)
            kernel_id = body.get("kernelImageId")
            if kernel_id:
                kernel = session.scalar(select(ImageRow).where(ImageRow.id == kernel_id))
                body["kernelFiles"] = list(kernel.body.get("files", [])) if kernel is not None else []
        return body

    def seed_defaults(self, driver: Any = None) -> int:
        """Public images on a database that has none yet: the driver's own (``default_images()``
        → ``(image id, kind, {role: path})``) or, for a driver without files, placeholders."""
        offered = list(driver.default_images()) if driver is not None and hasattr(driver, "default_images") else None
        with self.database.write() as session:
            if session.scalar(select(ImageRow.seq).limit(1)) is not None:
                return 0
        rows = []
        now = utcnow()
        if offered is not None:
            for image_id, kind, paths in offered:
                entries = file_entries({role: Path(p) for role, p in paths.items()})
                rows.append(ImageRow(id=image_id, resource_group_id=SYSTEM_GROUP, created_at=now, updated_at=now,
                                     version=1, name=image_id, kind=kind, is_shared=True,
                                     body=image_document(image_id, image_id, kind, entries, True, SYSTEM_GROUP, {})))
        else:
            for image_id in PLACEHOLDER_IMAGES:
                rows.append(ImageRow(id=image_id, resource_group_id=SYSTEM_GROUP, created_at=now, updated_at=now,
                                     version=1, name=image_id, kind="DISK", is_shared=True,
                                     body=image_document(image_id, image_id, "DISK", [], True, SYSTEM_GROUP, {},
                                                         placeholder=True)))
        with self.database.write() as session:
            if session.scalar(select(ImageRow.seq).limit(1)) is not None:
                return 0
            session.add_all(rows)
        return len(rows)
