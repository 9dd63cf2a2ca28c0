#!/usr/bin/env bash
# `make demo`: the main job end to end on built-in defaults. Today: check and format the
# zoo specs and print each model's resolved IR summary.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
echo "== dlspec check specs/*.dl"
$BIN/dlspec check specs/*.dl
echo "== dlspec fmt --check specs/*.dl"
$BIN/dlspec fmt --check specs/*.dl && echo "all specs are formatted"
echo "== resolved IR summary"
$BIN/python - <<'PY'
import glob
from collections import Counter

import dlspec

for path in sorted(glob.glob("specs/*.dl")):
    prog = dlspec.load(path)
    for m in prog.models:
        g = prog.ir(m)
        ops = Counter(n.op for n in g.nodes if n.in_cell is None)
        top = ", ".join(f"{k}×{v}" for k, v in ops.most_common(6))
        print(f"{path:28} {m:16} {len(g.nodes):5} nodes  {top}")
PY
