#!/usr/bin/env bash
# The test command: installs what is missing, builds (dev preset), and runs
# every test — Catch2 unit tests and the integration tests that start real
# docker-registry, containerd, skopeo and shoald processes on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh dev
# Integration tests pick their own ports and temp dirs, so they run in parallel;
# they mostly wait on I/O, hence more jobs than cores.
ctest --preset dev -j "${SHOAL_TEST_JOBS:-4}" --output-on-failure "$@"
