"""The software image registry through the HTTP API (``/admin/v1/images``, docs/images.md), on the
simulated infrastructure: registration with checksums, listing with SOL filters and paging, bad
input as problem details naming the field, use by computes (``vcImageId``), tenant visibility,
and the hand-written migration against the models."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.test_compute import WAIT, allocate, compute_settings
from tests.conftest import RunningServer, assert_problem, start_server


@pytest.fixture
def ivim(tmp_path: Path) -> Iterator[RunningServer]:
    server = start_server(tmp_path / "data", f"sqlite:///{tmp_path / 'vimkit.db'}",
                          **compute_settings(tmp_path, page_size=2))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dvim(database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    """On SQLite and PostgreSQL (the JSON lookups of image users differ)."""
    server = start_server(tmp_path / "data", database_url, **compute_settings(tmp_path, page_size=2))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    guest = tmp_path / "guest"
    guest.mkdir()
    (guest / "vmlinuz").write_bytes(b"kernel" * 1000)
    (guest / "initramfs.img").write_bytes(b"initrd" * 500)
    disks = tmp_path / "disks"
    disks.mkdir()
    (disks / "root.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 508)
    raw = tmp_path / "plain.raw"
    raw.write_bytes(b"raw-disk" * 64)
    (tmp_path / "empty").mkdir()
    return {"empty": tmp_path / "empty", "guest": guest, "kernel": guest / "vmlinuz", "initrd": guest / "initramfs.img", "disks": disks,
            "qcow2": disks / "root.qcow2", "raw": raw}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def register(api: httpx.Client, expect: int = 201, **body: object) -> dict:
    response = api.post("/admin/v1/images", json=body)
    assert response.status_code == expect, response.text
    return response.json()


def test_register_list_show_delete(ivim: RunningServer, files: dict[str, Path]) -> None:
    with ivim.client() as api:
        pair = register(api, name="guest", kind="KERNEL_INITRD", imageId="guest-1",
                        kernelPath=str(files["kernel"]), initrdPath=str(files["initrd"]), isPublic=True,
                        metadata={"os": "busybox"})
        assert [f["role"] for f in pair["files"]] == ["kernel", "initrd"]
        assert [f["sha256"] for f in pair["files"]] == [sha(files["kernel"]), sha(files["initrd"])]
        combined = hashlib.sha256(bytes.fromhex(sha(files["kernel"])) + bytes.fromhex(sha(files["initrd"])))
        assert pair["checksum"] == {"algorithm": "sha256", "value": combined.hexdigest()}
        assert pair["sizeBytes"] == 6000 + 3000 and pair["isPublic"] is True
        from_dir = register(api, name="guest-dir", kind="KERNEL_INITRD", directory=str(files["guest"]))
        assert from_dir["checksum"] == pair["checksum"] and from_dir["isPublic"] is False
        qcow2 = register(api, name="disk", kind="DISK", directory=str(files["disks"]), kernelImageId="guest-1")
        assert qcow2["files"][0]["format"] == "qcow2" and qcow2["kernelImageId"] == "guest-1"
        raw = register(api, name="raw", kind="DISK", diskPath=str(files["raw"]))
        assert raw["files"][0]["format"] == "raw" and raw["files"][0]["sizeBytes"] == 512

        shown = api.get("/admin/v1/images/guest-1")
        assert shown.status_code == 200 and shown.json()["name"] == "guest" and shown.headers["ETag"]
        assert api.get("/admin/v1/images/guest-1", headers={"If-None-Match": shown.headers["ETag"]}).status_code == 304

        # SOL filter on a column and on the body; paging (page size 2) over the seeded catalogue too.
        disks = api.get("/admin/v1/images", params={"filter": "(eq,kind,DISK);(eq,isPublic,false)"}).json()
        assert sorted(d["name"] for d in disks) == ["disk", "raw"]
        assert [i["imageId"] for i in api.get("/admin/v1/images",
                                               params={"filter": "(eq,metadata/os,busybox)"}).json()] == ["guest-1"]
        names, url = [], "/admin/v1/images"
        while url:
            page = api.get(url)
            assert page.status_code == 200 and len(page.json()) <= 2
            names += [i["name"] for i in page.json()]
            url = page.links.get("next", {}).get("url")
        assert {"ubuntu-24.04", "guest", "guest-dir", "disk", "raw"} <= set(names) and len(names) == len(set(names))

        # The kernel image of a disk image cannot go first; then both go.
        assert_problem(api.delete("/admin/v1/images/guest-1"), 409)
        assert api.delete(f"/admin/v1/images/{qcow2['imageId']}").status_code == 204
        assert api.delete("/admin/v1/images/guest-1").status_code == 204
        assert_problem(api.get("/admin/v1/images/guest-1"), 404)
        # Unregistering leaves the files alone.
        assert files["kernel"].exists() and files["qcow2"].exists()


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"kind": "KERNEL_INITRD", "directory": "/"}, 400, "name"),
    ({"name": "x", "kind": "ISO"}, 400, "kind"),
    ({"name": "x", "kind": "KERNEL_INITRD", "kernelPath": "relative/vmlinuz", "initrdPath": "{initrd}"}, 400,
     "kernelPath"),
    ({"name": "x", "kind": "KERNEL_INITRD", "kernelPath": "{kernel}", "initrdPath": "/nonexistent/initrd"}, 400,
     "initrdPath"),
    ({"name": "x", "kind": "KERNEL_INITRD", "kernelPath": "{kernel}"}, 400, "initrdPath"),
    ({"name": "x", "kind": "KERNEL_INITRD", "kernelPath": "{kernel}", "initrdPath": "{initrd}",
      "diskPath": "{raw}"}, 400, "diskPath"),
    ({"name": "x", "kind": "DISK"}, 400, "diskPath"),
    ({"name": "x", "kind": "DISK", "directory": "{empty}"}, 400, "directory"),
    ({"name": "x", "kind": "KERNEL_INITRD", "directory": "{disks}"}, 400, "directory"),
    ({"name": "x", "kind": "DISK", "directory": "{disks}", "diskPath": "{raw}"}, 400, "directory"),
    ({"name": "x", "kind": "DISK", "diskPath": "{raw}", "kernelImageId": "nope"}, 400, "kernelImageId"),
    ({"name": "x", "kind": "KERNEL_INITRD", "directory": "{guest}", "kernelImageId": "ubuntu"}, 400,
     "kernelImageId"),
    ({"name": "x", "kind": "DISK", "diskPath": "{raw}", "imageId": "bad id!"}, 400, "imageId"),
    ({"name": "x", "kind": "DISK", "diskPath": "{raw}", "size": 3}, 400, "size"),
    ({"name": "x", "kind": "DISK", "diskPath": "/" + "a" * 4000}, 400, "diskPath"),
    ({"name": "x", "kind": "DISK", "diskPath": "/" + "a" * 5000}, 400, "diskPath"),
    ({"name": "x", "kind": "DISK", "diskPath": "/nul\u0000byte"}, 400, "diskPath"),
    ({"name": "x", "kind": "DISK", "diskPath": "/proc/self/mem"}, 400, "diskPath"),
    ({"name": "x", "kind": "DISK", "directory": "/" + "d" * 4000}, 400, "directory"),
    ({"name": "x", "kind": "DISK", "diskPath": "{raw}", "imageId": "ubuntu-24.04"}, 409, "imageId"),
])
def test_bad_input_names_the_field(ivim: RunningServer, files: dict[str, Path], body: dict, status: int,
                                   field: str) -> None:
    body = {k: v.format(**{n: str(p) for n, p in files.items()}) if isinstance(v, str) else v for k, v in body.items()}
    with ivim.client() as api:
        assert_problem(api.post("/admin/v1/images", json=body), status, field)
        assert_problem(api.post("/admin/v1/images", content=b"{not json", headers={"Content-Type": "application/json"}),
                       400)


def test_computes_use_registered_images(dvim: RunningServer, files: dict[str, Path]) -> None:
    ivim = dvim
    with ivim.client() as api:
        register(api, name="guest", kind="KERNEL_INITRD", imageId="guest-1", directory=str(files["guest"]),
                 isPublic=True)
        compute = allocate(api, vcImageId="guest-1")
        assert compute["vcImageId"] == "guest-1"
        # The simulator records the image it was given.
        driver = ivim.services.infrastructure.driver
        assert driver._state.computes[compute["computeId"]].image_ref == "guest-1"
        assert_problem(api.post("/compute/v1/computes", json={"computeFlavourId": "m1.small", "vcImageId": "nope"},
                                headers=WAIT), 400, "vcImageId")
        refused = assert_problem(api.delete("/admin/v1/images/guest-1"), 409)
        assert compute["computeId"] in refused["detail"]
        assert api.delete(f"/compute/v1/computes/{compute['computeId']}", headers=WAIT).status_code in (200, 202, 204)
        deadline = time.monotonic() + 20
        while api.get(f"/compute/v1/computes/{compute['computeId']}").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert api.delete("/admin/v1/images/guest-1").status_code == 204
        # The seeded public catalogue keeps the usual names working on the simulator.
        assert allocate(api, vcImageId="ubuntu-24.04")["vcImageId"] == "ubuntu-24.04"


def test_tenant_visibility(ivim: RunningServer, files: dict[str, Path]) -> None:
    alice = ivim.new_consumer("alice", resource_group_id="group-a")
    bob = ivim.new_consumer("bob", resource_group_id="group-b")
    with ivim.client() as admin:
        register(admin, name="private", kind="KERNEL_INITRD", imageId="a-private", directory=str(files["guest"]),
                 resourceGroupId="group-a")
        register(admin, name="shared", kind="DISK", imageId="a-public", diskPath=str(files["raw"]),
                 resourceGroupId="group-a", isPublic=True)
        assert admin.get("/admin/v1/images/a-private").json()["resourceGroupId"] == "group-a"
    with alice.client() as api:
        # The registry is an operator API: consumers neither list nor register images.
        assert_problem(api.get("/admin/v1/images"), 403)
        assert_problem(api.post("/admin/v1/images", json={"name": "x", "kind": "DISK", "diskPath": str(files["raw"])}),
                       403)
        assert allocate(api, vcImageId="a-private")["vcImageId"] == "a-private"
        assert allocate(api, vcImageId="a-public")["vcImageId"] == "a-public"
    with bob.client() as api:
        # Another group's private image does not exist for bob; a public one does.
        body = assert_problem(api.post("/compute/v1/computes", json={"computeFlavourId": "m1.small",
                                                                     "vcImageId": "a-private"}, headers=WAIT),
                              400, "vcImageId")
        assert "a-private" in body["detail"]
        assert allocate(api, vcImageId="a-public")["vcImageId"] == "a-public"



def test_cli_images(ivim: RunningServer, files: dict[str, Path], tmp_path: Path) -> None:
    """``vimkit images add|list|show|delete`` against the server (through the SDK's admin.images)."""
    import json

    from typer.testing import CliRunner

    from tests.conftest import ADMIN_ID, ADMIN_SECRET
    from vimkit.cli.main import app

    env = {"VIMKIT_URL": ivim.base_url, "VIMKIT_CLIENT_ID": ADMIN_ID, "VIMKIT_CLIENT_SECRET": ADMIN_SECRET,
           "VIMKIT_PROFILES": str(tmp_path / "profiles.toml"), "COLUMNS": "200"}
    runner = CliRunner()

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, ["images", *args], env=env)
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
        return result.stdout

    added = json.loads(cli("add", "cli-guest", "--id", "cli-1", "--dir", str(files["guest"]), "--public",
                           "-m", "os=busybox", "-o", "json"))
    assert added["kind"] == "KERNEL_INITRD" and added["isPublic"] and added["metadata"] == {"os": "busybox"}
    disk = json.loads(cli("add", "cli-disk", "--kind", "disk", "--disk", str(files["qcow2"]), "--kernel-image", "cli-1",
                          "-o", "json"))
    assert disk["files"][0]["format"] == "qcow2" and disk["kernelImageId"] == "cli-1"
    listed = cli("list", "--filter", "(eq,name,cli-guest)")
    assert "cli-1" in listed and "KERNEL_INITRD" in listed and "cli-disk" not in listed
    assert json.loads(cli("show", "cli-1", "-o", "json"))["checksum"] == added["checksum"]
    assert "diskPath" in runner.invoke(app, ["images", "add", "bad", "--kind", "disk", "--disk",
                                           str(tmp_path / "missing.raw")], env=env).stderr
    cli("delete", "cli-1", code=1)   # the disk image boots with its kernel
    cli("delete", disk["imageId"], "cli-1")
    cli("show", "cli-1", code=1)
