"""Regenerate the diagrams in ``docs/img/`` from the zoo specs (``python bench/draw_zoo.py``).

Each entry: output name, spec, model (None: the file's last), drawing options. Needs
Graphviz's ``dot``; ``--png`` also writes PNGs next to the SVGs (for looking at them)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dlspec  # noqa: E402
from dlspec.draw import render  # noqa: E402

ZOO: list[tuple[str, str, str | None, dict]] = [
    ("lenet5", "specs/lenet5.dl", None, {}),
    ("resnet18", "specs/resnet18.dl", None, {"depth": 1}),
    ("resnet18_blocks", "specs/resnet18.dl", None, {"fold_repeats": True}),
    ("inception", "specs/inception.dl", None, {}),
    ("lstm_cells", "specs/lstm.dl", None, {"cells": True}),
    ("gru_cells", "specs/gru.dl", None, {"cells": True}),
    ("minimal_gru_cells", "specs/gru_cell.dl", None, {"cells": True}),
    ("transformer_block", "specs/transformer.dl", "TransformerEncoderLayer", {}),
    ("siamese", "specs/siamese.dl", None, {}),
    ("gpt2_small", "specs/gpt2_small.dl", None, {"fold_repeats": True, "phase": "eval"}),
]


#: block calls are collapsed below this depth in the zoo table's diagrams (docs/zoo.md),
#: and repeats folded, so that the big networks stay readable
ZOO_TABLE_OPTS = {"depth": 1, "fold_repeats": True}


def zoo_table(out: Path) -> None:
    """``docs/img/SPEC.MODEL.svg`` for every model of every zoo spec (docs/zoo.md links them)."""
    for path in sorted((ROOT / "specs").glob("*.dl")):
        prog = dlspec.load(path, name=f"specs/{path.name}")
        for model in prog.models:
            g = prog.draw(model, **ZOO_TABLE_OPTS)
            name = f"{path.stem}.{model}.svg"
            (out / name).write_bytes(render(g, "svg"))
            print(f"wrote docs/img/{name}")


def main(argv: list[str]) -> int:
    out = ROOT / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    zoo_table(out)
    png = "--png" in argv
    for name, spec, model, opts in ZOO:
        path = ROOT / spec
        if not path.exists():
            print(f"skip {name}: no {spec}", file=sys.stderr)
            continue
        g = dlspec.load(path, name=spec).draw(model, **opts)
        (out / f"{name}.svg").write_bytes(render(g, "svg"))
        if png:
            (out / f"{name}.png").write_bytes(render(g, "png"))
        print(f"wrote docs/img/{name}.svg  ({spec}{' ' + model if model else ''}{''.join(f' {k}={v}' for k, v in opts.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
