#!/usr/bin/env bash
# The main-job command: installs what is missing, builds, and runs the demo
# (a local registry with a generated ModelPack model, a scheduler, three
# shoald nodes and one containerd per node pulling the model through the swarm).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh dev
export SHOAL_BUILD_DIR="$PWD/build/dev"
exec /usr/bin/python3 scripts/demo.py "$@"
