"""Hover latency of the language server's analysis on ResNet-152 (specs/resnet.dl).

The first request of a document version analyses it (parse, expand, shapes, report); later
requests on the same version reuse that analysis. Prints both; run: .venv/bin/python bench/lsp_hover.py
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from dlspec.lsp.analysis import Analysis, path_to_uri
from dlspec.lsp.text import Position

SPEC = Path(__file__).resolve().parent.parent / "specs" / "resnet.dl"
# ResNet-152's `Stage(256, 36, stride = 2) as layer3`, and a conv inside Bottleneck (66 uses)
POSITIONS = [Position(41, 4), Position(11, 6), Position(40, 30), Position(43, 40)]


def main() -> None:
    text = SPEC.read_text(encoding="utf-8")
    t0 = time.perf_counter()
    a = Analysis(path_to_uri(SPEC), text)
    first = a.hover(POSITIONS[0])
    t1 = time.perf_counter()
    assert first is not None and "ResNet152" in first.markdown
    times = []
    for _ in range(50):
        for p in POSITIONS:
            s = time.perf_counter()
            a.hover(p)
            times.append(time.perf_counter() - s)
    print(f"first analysis + hover: {(t1 - t0) * 1000:.1f} ms")
    print(
        f"hover after it: median {statistics.median(times) * 1000:.2f} ms, "
        f"max {max(times) * 1000:.2f} ms over {len(times)} requests (target: ≤ 50 ms)"
    )


if __name__ == "__main__":
    main()
