#!/usr/bin/env bash
# Configures and builds with a CMake preset (default: dev) using Ninja and ccache.
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-dev}"
# Let clones at other paths (CI) share ccache entries.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j "$(nproc)"
