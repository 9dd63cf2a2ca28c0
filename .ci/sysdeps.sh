#!/usr/bin/env bash
# Installs the system programs dlspec needs: clang (tinygrad's CPU device compiles
# kernels with it) and dot (Graphviz, for `dlspec draw`). As root it uses apt-get;
# otherwise it stops with the exact command to run.
set -euo pipefail
missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v dot >/dev/null 2>&1 || missing+=(graphviz)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "dlspec needs: ${missing[*]}. Install it with:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  echo "(macOS: brew install llvm graphviz)" >&2
  exit 1
fi
