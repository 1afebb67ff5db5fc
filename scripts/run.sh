#!/usr/bin/env bash
# Install vimkit and run the VIM server on its embedded default: simulated infrastructure, SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/vimkit serve "$@"
