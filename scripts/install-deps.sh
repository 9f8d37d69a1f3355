#!/usr/bin/env bash
# Installs the Debian 12 packages Shoal needs to build, test and run its demo.
# Idempotent: only missing packages are installed.
set -euo pipefail

# --build-only: what building needs, nothing for tests (deploy/Containerfile).
BUILD_PACKAGES=(
  cmake ninja-build ccache g++ pkg-config
  libboost1.81-dev libboost-url1.81-dev libboost-json1.81-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  librocksdb-dev libspdlog-dev catch2 libssl-dev libyaml-cpp-dev libcli11-dev libarchive-dev
)
PACKAGES=(
  "${BUILD_PACKAGES[@]}"
  # real peers for tests and the demo
  docker-registry skopeo containerd curl apache2-utils python3 python3-pytest
  iproute2 procps
  # benchmarks (network namespaces, load) and operating (dashboard browser test,
  # promtool, systemd-analyze, ModelPack schema checks)
  wrk chromium chromium-driver prometheus systemd python3-jsonschema
  # deploy tests: Kubernetes manifests and Grafana JSON (kubectl comes with the machine)
  python3-yaml
)

if [ "${1:-}" = "--build-only" ]; then
  PACKAGES=("${BUILD_PACKAGES[@]}")
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#PACKAGES[@]} packages present"
fi

# The dashboard is built with the machine's Node.js and npm (the npm registry
# is reachable; Debian's npm package would conflict with a Node.js that ships its own).
if ! command -v npm >/dev/null; then
  echo "install-deps: npm not found; installing Debian's nodejs and npm"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends nodejs npm
fi
