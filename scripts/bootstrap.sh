#!/usr/bin/env bash
# Shared by run.sh and test.sh: make sure Python 3.11+ with venv exists and install vimkit into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
apt_install() {
  if [ "$(id -u)" != 0 ]; then echo "need root to apt-get install $*" >&2; exit 1; fi
  if [ -z "${VIMKIT_APT_UPDATED:-}" ]; then apt-get update -qq; export VIMKIT_APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if ! python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null || ! python3 -m venv --help >/dev/null 2>&1; then
  apt_install python3 python3-venv python3-pip
fi
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".${1:-}" 2>&1 | grep -v -E '^(WARNING: Location|  )' || true
.venv/bin/python -c 'import vimkit' # fail here, loudly, if the install did not work
