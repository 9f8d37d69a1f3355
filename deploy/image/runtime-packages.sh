#!/usr/bin/env bash
# Prints the Debian packages that hold the shared libraries the given
# binaries load (ldd), one per line, sorted: what the runtime image needs,
# found from the binaries themselves rather than kept by hand.
# Usage: runtime-packages.sh BINARY...
set -euo pipefail
(($#)) || { echo "usage: $0 BINARY..." >&2; exit 2; }
mapfile -t libs < <(ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u)
# merged /usr: dpkg may have recorded a file under /lib or /usr/lib, by its
# own name or its symlink target
variants() {
  local p
  for p in "$1" "$(readlink -f "$1")"; do
    echo "$p"; echo "/usr${p#/usr}"; echo "${p#/usr}"
  done | sort -u
}
mapfile -t cands < <(for lib in "${libs[@]}"; do variants "$lib"; done | sort -u)
declare -A owner
# lines: "pkg[:arch][, pkg2...]: /path"; one dpkg-query for every path (fast)
while IFS= read -r line; do
  pkg=${line%%: /*}
  pkg=${pkg%%,*}
  owner[${line#*: }]=${pkg%%:*}
done < <(dpkg-query -S "${cands[@]}" 2>/dev/null || true)
for lib in "${libs[@]}"; do
  pkg=""
  while read -r v; do
    [ -n "${owner[$v]:-}" ] && { pkg=${owner[$v]}; break; }
  done < <(variants "$lib")
  if [ -z "$pkg" ]; then
    echo "runtime-packages: no Debian package holds $lib (needed by $*)" >&2
    exit 1
  fi
  echo "$pkg"
done | sort -u
