#!/usr/bin/env bash
# Times what a new user waits for: `make setup` in a fresh clone, a second `make setup` (must be a
# no-op), and `make test`. Usage: benchmarks/setup_and_suite.sh [CLONE_DIR]
# Uses GNU time for wall-clock seconds and peak memory; pip's download cache is whatever this machine has.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$(mktemp -d)/maskfactory}
git clone --quiet "$repo" "$dir"
cd "$dir"
t() { /usr/bin/time -f "$1: %e s wall, %M KiB peak RSS" "${@:2}"; }
t "make setup (fresh clone)" make setup >/dev/null
t "make setup (again)" make setup
t "make test" make test PYTEST_ARGS="-q -p no:cacheprovider" | tail -n 3
