#!/usr/bin/env bash
# Install everything the test suite needs (Python packages, PostgreSQL, QEMU and its test guest)
# and run the whole suite: everything but the real-VM tests on two workers, then the real-VM
# tests (marker `qemu`) on their own, so that guests boot on an otherwise idle machine.
# Extra arguments go to a single pytest run instead, e.g. `scripts/test.sh -m "not slow and not qemu"`.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v qemu-img >/dev/null || missing+=(qemu-utils)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v depmod >/dev/null || missing+=(kmod)
command -v cpio >/dev/null || missing+=(cpio)
command -v ip >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "need root to install ${missing[*]}" >&2; exit 1; fi
  apt-get update -qq && export VIMKIT_APT_UPDATED=1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The test guest's kernel is fetched with apt-get download: the package lists must be there.
if [ -z "${VIMKIT_APT_UPDATED:-}" ] && ! apt-cache depends linux-image-amd64 2>/dev/null | grep -q 'Depends: linux-image-[0-9]'; then
  apt-get update -qq && export VIMKIT_APT_UPDATED=1
fi
scripts/bootstrap.sh "[test,qemu]"
pgdir=$(mktemp -d /tmp/vimkit-pg.XXXXXX)
trap 'scripts/pg-test-server.sh stop "$pgdir"; rm -rf "$pgdir"' EXIT
VIMKIT_TEST_PG_URL=$(scripts/pg-test-server.sh start "$pgdir")
export VIMKIT_TEST_PG_URL VIMKIT_TEST_REQUIRE_PG=1
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest -p no:cacheprovider -n 2 --dist loadgroup "$@"
fi
.venv/bin/python -m pytest -p no:cacheprovider -n 2 --dist loadgroup -m "not qemu"
VIMKIT_TEST_REQUIRE_QEMU=1 .venv/bin/python -m pytest -p no:cacheprovider -m qemu tests/qemu
