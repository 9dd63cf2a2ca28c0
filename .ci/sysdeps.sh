#!/usr/bin/env bash
# Installs the system programs dlspec needs: clang (tinygrad's CPU device compiles
# kernels with it), dot (Graphviz, for `dlspec draw`) and, for the tests, Chromium. As root it uses apt-get;
# otherwise it stops with the exact command to run.
set -euo pipefail
missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v dot >/dev/null 2>&1 || missing+=(graphviz)
# Chromium drives the browser test of `dlspec serve`; only the test needs it (it skips without).
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != "0" ] && [ "${missing[*]}" = "chromium" ]; then
  echo "note: the browser test of 'dlspec serve' needs Chromium: sudo apt-get install -y chromium" >&2
  exit 0
fi
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
