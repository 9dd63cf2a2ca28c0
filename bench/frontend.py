"""Front-end benchmark: spec text → resolved graph IR, and the CLI's start-up time.

Reports, in one run, a table on stdout (``--json`` for a JSON object instead):

(a) ResNet-152 (``specs/resnet.dl``) → IR in-process: median of N runs after a warm-up, with
    the parse (text → AST) and expand (AST → IR) stages timed separately. Goal ≤ 50 ms.
(b) Generated specs of 1,000 and 10,000 layers (a flat dense/relu chain, a stack of conv
    block calls, and the same blocks through ``repeat``): text → IR time and ms per 1k
    layers, to show the growth is linear. Goal ≤ 1 s for 10,000 layers.
(c) ``dlspec --help`` as a subprocess: median wall time of several runs, and whether
    tinygrad, lark or pydantic got imported for it. Goal ≤ 0.3 s.
(d) Shape inference, when ``dlspec.shapes.infer(graph)`` exists: its time on the ResNet-152
    and 10,000-layer graphs, as overhead relative to the front end. Goal ≤ 20 %.
(e) TinyLlama-1.1B (``specs/tinyllama.dl``) → resolved, shaped IR in-process: text → AST →
    IR → static shapes and costs (``dlspec.shapes.infer``), median of N runs after a warm-up,
    each stage timed. Goal ≤ 50 ms.

Run: ``.venv/bin/python bench/frontend.py`` (``--runs``, ``--json``, ``--quick``).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dlspec  # noqa: E402

RESNET = ROOT / "specs" / "resnet.dl"
PUBLISHED = {"ResNet50": 25_557_032, "ResNet152": 60_192_808}
TINYLLAMA = ROOT / "specs" / "tinyllama.dl"
TINYLLAMA_PARAMS = 1_100_048_384

GOAL_RESNET_MS = 50.0
GOAL_10K_MS = 1000.0
GOAL_HELP_S = 0.3
GOAL_SHAPES = 0.20
GOAL_TINYLLAMA_MS = 50.0


# ---- timing -----------------------------------------------------------------------


class _Clock:
    """Wall and CPU (this process: user + system) seconds of timed sections. Wall is the
    figure the goals are about; CPU time is what the code itself costs, unaffected by other
    programs competing for the machine's cores."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall.append(time.perf_counter() - self._w)
        self.cpu.append(time.process_time() - self._c)

    def clear(self) -> None:
        self.wall.clear()
        self.cpu.clear()

    @property
    def ms(self) -> float:
        return statistics.median(self.wall) * 1000

    @property
    def cpu_ms(self) -> float:
        return statistics.median(self.cpu) * 1000


def _time(fn, runs: int, warmup: int = 1) -> _Clock:
    """Times of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    clock = _Clock()
    for _ in range(runs):
        gc.collect()
        with clock:
            fn()
    return clock


# ---- (a) ResNet-152 -------------------------------------------------------------------


def bench_resnet(runs: int) -> dict:
    text = RESNET.read_text(encoding="utf-8")
    file = str(RESNET.relative_to(ROOT))
    total, parse_t, expand_t = _Clock(), _Clock(), _Clock()

    def once():
        with total:
            with parse_t:
                prog = dlspec.load(RESNET)  # text → AST, definitions collected
            with expand_t:
                prog.ir("ResNet152")  # AST → validated IR

    for _ in range(2):  # warm-up: builds the grammar, fills caches
        once()
    for c in (total, parse_t, expand_t):
        c.clear()
    for _ in range(runs):
        gc.collect()
        once()
    prog = dlspec.load(RESNET)
    g = prog.ir("ResNet152")
    counts = {m: count_params(prog.ir(m)) for m in PUBLISHED}
    return {
        "file": file,
        "bytes": len(text.encode()),
        "nodes": len(g.nodes),
        "runs": runs,
        "total_ms": total.ms,
        "parse_ms": parse_t.ms,
        "expand_ms": expand_t.ms,
        "min_total_ms": min(total.wall) * 1000,
        "cpu_ms": total.cpu_ms,
        "parse_cpu_ms": parse_t.cpu_ms,
        "expand_cpu_ms": expand_t.cpu_ms,
        "params": counts,
        "params_ok": all(counts[m] == PUBLISHED[m] for m in PUBLISHED),
        "goal_ms": GOAL_RESNET_MS,
        "graph": g,
    }


def count_params(g) -> int | None:
    """Trainable parameters by propagating channel counts through the IR (only the ops a
    ResNet uses; ``None`` for anything else). A sanity check, not a counting module."""
    ch: dict[str, int | None] = {}
    total = 0
    for n in g.nodes:
        p = n.params
        cin = ch.get(n.inputs[0]) if n.inputs else None
        if n.op == "input":
            ch[n.path] = p.shape[0] if isinstance(p.shape[0], int) else None
        elif n.op == "conv":
            k = p.kernel if isinstance(p.kernel, tuple) else (p.kernel, p.kernel)
            total += p.filters * (cin // p.groups) * math.prod(k) + (p.filters if p.bias else 0)
            ch[n.path] = p.filters
        elif n.op == "batchnorm":
            total += 2 * cin if p.affine else 0
            ch[n.path] = cin
        elif n.op == "dense":
            total += p.units * cin + (p.units if p.bias else 0)
            ch[n.path] = p.units
        elif n.op in ("relu", "pool", "flatten", "add"):  # flatten only after a global pool here
            ch[n.path] = cin
        else:
            return None
    return total


# ---- (b) generated specs ------------------------------------------------------------------


def spec_chain(layers: int) -> str:
    """A flat chain: ``dense 64 -> relu`` lines, ``layers`` nodes besides the input."""
    lines = ["model Chain {", "  input x: [64]"]
    lines += ["  dense 64 -> relu"] * (layers // 2)
    lines += ["  dense 64"] * (layers % 2)
    return "\n".join(lines + ["}", ""])


# Unit: 7 nodes (conv, batchnorm, relu, conv, batchnorm, add, relu).
_UNIT = """block Unit(c) {
  residual {
    conv c kernel 3 padding 1, bias false -> batchnorm -> relu
    conv c kernel 3 padding 1, bias false -> batchnorm
  }
  relu
}
"""


def spec_blocks(layers: int) -> str:
    """A conv stack written as ``layers / 7`` block calls, one per line (topped up with relu)."""
    lines = [_UNIT, "model Blocks {", "  input image: [16, 32, 32]"]
    lines += ["  Unit(16)"] * (layers // 7) + ["  relu"] * (layers % 7)
    return "\n".join(lines + ["}", ""])


def spec_repeat(layers: int) -> str:
    """The same conv stack through ``repeat``: small text, large graph (the expander alone)."""
    tail = "  relu\n" * (layers % 7)
    return f"{_UNIT}\nmodel Repeat {{\n  input image: [16, 32, 32]\n  repeat {layers // 7} {{ Unit(16) }}\n{tail}}}\n"


GENERATORS = {"dense/relu chain": spec_chain, "conv blocks (calls)": spec_blocks, "conv blocks (repeat)": spec_repeat}


def bench_generated(sizes: list[int], runs: int) -> list[dict]:
    rows = []
    for kind, gen in GENERATORS.items():
        for size in sizes:
            text = gen(size)
            g = dlspec.load(text).ir()
            n = len(g.nodes) - 1  # layers, not counting the input
            r = max(3, runs if size <= 1000 else runs // 4)
            parse_t = _time(lambda text=text: dlspec.load(text), r)
            total = _time(lambda text=text: dlspec.load(text).ir(), r)
            rows.append(
                {
                    "kind": kind,
                    "layers": n,
                    "lines": text.count("\n"),
                    "runs": r,
                    "total_ms": total.ms,
                    "parse_ms": parse_t.ms,
                    "ms_per_1k": total.ms / n * 1000,
                    "min_total_ms": min(total.wall) * 1000,
                    "cpu_ms": total.cpu_ms,
                    "parse_cpu_ms": parse_t.cpu_ms,
                    "cpu_ms_per_1k": total.cpu_ms / n * 1000,
                    "graph": g,
                }
            )
    return rows


# ---- (c) dlspec --help ---------------------------------------------------------------------

_PROBE = """
import sys
from dlspec.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
heavy = [m for m in ("tinygrad", "lark", "pydantic", "rich", "graphviz") if m in sys.modules]
sys.stderr.write("IMPORTED:" + ",".join(heavy) + "\\n")
"""


def _dlspec_exe() -> list[str]:
    exe = Path(sys.executable).parent / "dlspec"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dlspec"]


def _process_times(cmd: list[str], runs: int, env: dict, ok: tuple[int, ...] = (0,)) -> tuple[list[float], list[float]]:
    """Wall seconds of each run of ``cmd``, and the CPU seconds (user + system) it used."""
    wall, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, env=env, cwd=ROOT)
        wall.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if r.returncode not in ok:
            raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.decode()[-500:]}")
    return wall, cpu


def bench_help(runs: int) -> dict:
    # As installed: byte-compiled modules are cached (this sandbox may set PYTHONDONTWRITEBYTECODE).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    exe = _dlspec_exe()
    cmd = exe + ["--help"]
    _process_times(cmd, 1, env)  # warm-up: writes .pyc files, warms the OS file cache
    wall, cpu = _process_times(cmd, runs, env)
    probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, cwd=ROOT, env=env)
    line = next((x for x in probe.stderr.splitlines() if x.startswith("IMPORTED:")), "IMPORTED:?")
    heavy = [m for m in line.removeprefix("IMPORTED:").split(",") if m]
    # for information: a whole `dlspec check` of the ResNet spec (imports, grammar, parse, expand, shapes)
    check = exe + ["check", str(RESNET.relative_to(ROOT))]
    _process_times(check, 1, env)
    cwall, ccpu = _process_times(check, max(3, runs // 2), env)
    return {
        "command": " ".join([os.path.relpath(cmd[0], ROOT)] + cmd[1:]),
        "runs": runs,
        "median_s": statistics.median(wall),
        "min_s": min(wall),
        "cpu_s": statistics.median(cpu),
        "imported": heavy,
        "goal_s": GOAL_HELP_S,
        "check_command": " ".join([os.path.relpath(check[0], ROOT)] + check[1:]),
        "check_s": statistics.median(cwall),
        "check_cpu_s": statistics.median(ccpu),
    }


# ---- (d) shape inference ------------------------------------------------------------------


def bench_shapes(resnet: dict, generated: list[dict], runs: int) -> dict:
    if importlib.util.find_spec("dlspec.shapes") is None:
        return {"available": False, "why": "no module dlspec.shapes"}
    try:
        mod = importlib.import_module("dlspec.shapes")
    except Exception as e:  # noqa: BLE001 - report, don't crash the benchmark
        return {"available": False, "why": f"import failed: {type(e).__name__}: {e}"}
    infer = getattr(mod, "infer", None)
    if not callable(infer):
        return {"available": False, "why": "dlspec.shapes has no infer(graph)"}
    cases = [("ResNet-152", resnet["graph"], resnet["total_ms"], resnet["cpu_ms"], runs)]
    cases += [
        (f"{r['kind']}, {r['layers']:,} layers", r["graph"], r["total_ms"], r["cpu_ms"], r["runs"])
        for r in generated
        if r["layers"] >= 5000
    ]
    rows = []
    for label, g, front_ms, front_cpu, r in cases:
        try:
            c = _time(lambda g=g: infer(g), r)
        except Exception as e:  # noqa: BLE001
            rows.append({"case": label, "error": f"{type(e).__name__}: {e}"})
            continue
        rows.append(
            {
                "case": label,
                "infer_ms": c.ms,
                "infer_cpu_ms": c.cpu_ms,
                "front_ms": front_ms,
                "front_cpu_ms": front_cpu,
                # CPU over CPU: both sides measured alike, other programs' load cancels out
                "overhead": c.cpu_ms / front_cpu,
            }
        )
    return {"available": True, "rows": rows, "goal": GOAL_SHAPES}


# ---- (e) TinyLlama → shaped IR ------------------------------------------------------------


def bench_tinyllama(runs: int) -> dict:
    from dlspec.shapes import infer

    total, parse_t, expand_t, shape_t = _Clock(), _Clock(), _Clock(), _Clock()

    def once():
        with total:
            with parse_t:
                prog = dlspec.load(TINYLLAMA)  # text → AST, definitions collected
            with expand_t:
                g = prog.ir("TinyLlama")  # AST → validated IR
            with shape_t:
                s = infer(g)  # static shapes, params and MACs of every layer
        return g, s

    for _ in range(2):
        once()
    for c in (total, parse_t, expand_t, shape_t):
        c.clear()
    for _ in range(runs):
        gc.collect()
        g, s = once()
    params = sum(c.params for c in s.costs.values())
    return {
        "file": str(TINYLLAMA.relative_to(ROOT)),
        "nodes": len(g.nodes),
        "runs": runs,
        "total_ms": total.ms,
        "min_total_ms": min(total.wall) * 1000,
        "cpu_ms": total.cpu_ms,
        "parse_ms": parse_t.ms,
        "expand_ms": expand_t.ms,
        "shapes_ms": shape_t.ms,
        "parse_cpu_ms": parse_t.cpu_ms,
        "expand_cpu_ms": expand_t.cpu_ms,
        "shapes_cpu_ms": shape_t.cpu_ms,
        "params": params,
        "params_ok": params == TINYLLAMA_PARAMS,
        "goal_ms": GOAL_TINYLLAMA_MS,
    }


# ---- report ----------------------------------------------------------------------------------


def _ok(cond: bool) -> str:
    return "ok" if cond else "MISSED"


def report(res: dict) -> str:
    rows: list[tuple[str, ...]] = []
    a = res["resnet"]
    rows.append(
        (
            f"(a) ResNet-152 → IR ({a['nodes']} nodes, median of {a['runs']})",
            f"{a['total_ms']:.1f} ms (min {a['min_total_ms']:.1f})",
            f"{a['cpu_ms']:.1f} ms",
            "≤ 50 ms",
            _ok(a["total_ms"] <= a["goal_ms"]),
        )
    )
    rows.append(("      parse (text → AST)", f"{a['parse_ms']:.1f} ms", f"{a['parse_cpu_ms']:.1f} ms", "", ""))
    rows.append(("      expand (AST → IR)", f"{a['expand_ms']:.1f} ms", f"{a['expand_cpu_ms']:.1f} ms", "", ""))
    for kind in GENERATORS:
        sub = [r for r in res["generated"] if r["kind"] == kind]
        for r in sub:
            big = r["layers"] >= 10_000
            rows.append(
                (
                    f"(b) {kind}, {r['layers']:,} layers ({r['lines']:,} lines)",
                    f"{r['total_ms']:.0f} ms (min {r['min_total_ms']:.0f})",
                    f"{r['cpu_ms']:.0f} ms (parse {r['parse_cpu_ms']:.0f}; {r['cpu_ms_per_1k']:.0f} ms/1k)",
                    "≤ 1000 ms" if big else "",
                    _ok(r["total_ms"] <= GOAL_10K_MS) if big else "",
                )
            )
        if len(sub) >= 2:
            growth = sub[-1]["cpu_ms_per_1k"] / sub[0]["cpu_ms_per_1k"]
            rows.append(
                (
                    f"      growth of ms/1k, {sub[-1]['layers']:,} vs {sub[0]['layers']:,}",
                    "",
                    f"× {growth:.2f}",
                    "≈ 1 (linear)",
                    _ok(growth < 1.3),
                )
            )
    c = res["help"]
    rows.append(
        (
            f"(c) `{c['command']}` (median of {c['runs']})",
            f"{c['median_s']:.3f} s",
            f"{c['cpu_s']:.3f} s",
            "≤ 0.3 s",
            _ok(c["median_s"] <= c["goal_s"]),
        )
    )
    rows.append(
        ("      heavy imports for --help", ", ".join(c["imported"]) or "none", "", "no tinygrad", _ok("tinygrad" not in c["imported"]))
    )
    rows.append((f"    `{c['check_command']}` (for information)", f"{c['check_s']:.3f} s", f"{c['check_cpu_s']:.3f} s", "", ""))
    s = res["shapes"]
    if not s["available"]:
        rows.append(("(d) shape inference", "not available", "", "≤ 20 %", ""))
    else:
        for r in s["rows"]:
            if "error" in r:
                rows.append((f"(d) shape inference, {r['case']}", r["error"], "", "≤ 20 %", "ERROR"))
            else:
                rows.append(
                    (
                        f"(d) shape inference, {r['case']}",
                        f"{r['infer_ms']:.1f} ms",
                        f"{r['infer_cpu_ms']:.1f} ms (+{r['overhead'] * 100:.0f} %)",
                        "≤ 20 %",
                        _ok(r["overhead"] <= s["goal"]),
                    )
                )
    e = res["tinyllama"]
    rows.append(
        (
            f"(e) TinyLlama-1.1B → shaped IR ({e['nodes']} nodes, median of {e['runs']})",
            f"{e['total_ms']:.1f} ms (min {e['min_total_ms']:.1f})",
            f"{e['cpu_ms']:.1f} ms",
            "≤ 50 ms",
            _ok(e["total_ms"] <= e["goal_ms"]),
        )
    )
    for stage in ("parse", "expand", "shapes"):
        rows.append((f"      {stage}", f"{e[stage + '_ms']:.1f} ms", f"{e[stage + '_cpu_ms']:.1f} ms", "", ""))
    head = ("measure", "wall: median (min)", "CPU: median", "goal", "")
    w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    sep = "  "
    lines = [sep.join(h.ljust(w[i]) for i, h in enumerate(head)).rstrip(), sep.join("-" * x for x in w)]
    lines += [sep.join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    m = res["machine"]
    counts = ", ".join(f"{k} {v:,}" if v is not None else f"{k} ?" for k, v in a["params"].items())
    foot = [
        "goals are judged on wall time; CPU time is the process's own (user + system), unaffected by other load",
        f"params (sanity check): {counts}"
        + (" — match the published counts" if a["params_ok"] else " — DO NOT match the published counts"),
    ]
    if not s["available"]:
        foot.append(f"shape inference: not available ({s['why']})")
    foot.append(
        f"TinyLlama params: {e['params']:,}" + (" — the published count" if e["params_ok"] else " — NOT the published 1,100,048,384")
    )
    top = f"dlspec front-end benchmark — {res['date']}; {m['cpus']} CPUs, {m['platform']}; Python {m['python']}"
    return "\n".join([top, ""] + lines + [""] + foot)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="timed runs per in-process figure (default 20)")
    ap.add_argument("--help-runs", type=int, default=9, help="runs of 'dlspec --help' (default 9)")
    ap.add_argument("--quick", action="store_true", help="fewer runs, for a smoke test")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = ap.parse_args(argv)
    runs, help_runs = (3, 3) if args.quick else (args.runs, args.help_runs)

    res = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    res["resnet"] = bench_resnet(runs)
    res["generated"] = bench_generated([1000, 10_000], runs)
    res["help"] = bench_help(help_runs)
    res["shapes"] = bench_shapes(res["resnet"], res["generated"], runs)
    res["tinyllama"] = bench_tinyllama(runs)
    if args.json:
        res["resnet"].pop("graph")
        for r in res["generated"]:
            r.pop("graph")
        print(json.dumps(res, indent=2))
    else:
        print(report(res))
    ok = (
        res["resnet"]["total_ms"] <= GOAL_RESNET_MS
        and all(r["total_ms"] <= GOAL_10K_MS for r in res["generated"] if r["layers"] >= 10_000)
        and res["help"]["median_s"] <= GOAL_HELP_S
        and res["tinyllama"]["total_ms"] <= GOAL_TINYLLAMA_MS
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
