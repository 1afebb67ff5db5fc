#!/usr/bin/env bash
# Install everything the test suite needs (Python packages, PostgreSQL) and run the whole suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then echo "need root to install PostgreSQL" >&2; exit 1; fi
  apt-get update -qq && export VIMKIT_APT_UPDATED=1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
scripts/bootstrap.sh "[test]"
pgdir=$(mktemp -d /tmp/vimkit-pg.XXXXXX)
trap 'scripts/pg-test-server.sh stop "$pgdir"; rm -rf "$pgdir"' EXIT
VIMKIT_TEST_PG_URL=$(scripts/pg-test-server.sh start "$pgdir")
export VIMKIT_TEST_PG_URL VIMKIT_TEST_REQUIRE_PG=1
.venv/bin/python -m pytest -p no:cacheprovider -n 2 --dist loadgroup "$@"
