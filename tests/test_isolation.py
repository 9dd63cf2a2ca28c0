"""No process-wide mutable state in the library (issue 15): two programs in one process, or in two
threads at once, do not interfere.

* The source registry of diagnostics: every thread has its own, and a program keeps its own
  files (``Program.sources``); an error raised for one renders that program's line even when
  another program of the same file name was loaded since (and in another thread meanwhile).
* Shape atoms (``⌊(T−3)/2⌋``) carry their definitions inside the ``Sym`` value: no table.
* The initialiser's RNG is a generator per call (:func:`dlspec.state.initial`).
* The recurrence switch (:func:`dlspec.backends.tinygrad.scan.unrolled`) and the tuning hooks
  are per thread (context variables).

Two specs with overlapping symbol names (``T``, ``h``) and different seeds are analysed in two
threads concurrently, many times over, and each result must equal the single-threaded one.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import dlspec
from dlspec.dims import dvalue, free_names
from dlspec.errors import DlspecError, render_all

A = """\
model M(h = 8) {
  input x: [4, T]
  conv h kernel 3 stride 2 -> relu
  conv h kernel 3 stride 2 as feat
  flatten
}
"""

B = """\
model M(h = 6) {
  input x: [2, T]
  conv h kernel 5 stride 3 -> tanh
  pool avg kernel 2
  flatten
}
"""

BAD_A = "model M {\n  input x: [4]\n  dense 8 -> reluu\n}\n"
BAD_B = "model M {\n  input x: [4]\n  dense 8\n  dense 3 -> sigmoidd\n}\n"


def analyse(text: str, seed: int, bad: str) -> dict:
    """Everything a program computes that the shared state could have touched."""
    from dlspec.backends.tinygrad import scan
    from dlspec.state import initial

    prog = dlspec.load(text, name="spec.dl")
    graph, shapes = prog.ir("M"), prog.shapes("M")
    out = shapes.types[graph.outputs[0].node].sample
    weights = initial(graph, shapes, seed)
    try:
        dlspec.load(bad, name="spec.dl").ir("M")
        raise AssertionError("the bad spec compiled")
    except DlspecError as e:
        rendered = render_all(e.diagnostics, e.sources)
    return {
        "report": prog.report("M", seq={"T": 50}),
        "out": [str(d) for d in out],
        "T=50": [dvalue(d, {"T": 50}) for d in out],
        "T=97": [dvalue(d, {"T": 97}) for d in out],
        "free": sorted(set().union(*(free_names(d) for d in out))),
        "weights": {k: v.tobytes() for k, v in weights.items()},
        "error": rendered,
        "scan": scan.enabled(),
    }


def test_two_programs_in_two_threads_equal_each_alone():
    alone = {"a": analyse(A, 1, BAD_A), "b": analyse(B, 2, BAD_B)}
    assert alone["a"]["T=50"] != alone["b"]["T=50"] and alone["a"]["free"] == alone["b"]["free"] == ["T"]
    assert "reluu" in alone["a"]["error"] and "sigmoidd" in alone["b"]["error"]
    assert "3 |   dense 8 -> reluu" in alone["a"]["error"] and "4 |   dense 3 -> sigmoidd" in alone["b"]["error"]
    # the atoms evaluate by hand: ⌊(⌊(T−3)/2⌋+1 − 3)/2⌋ + 1 at T = 97 is ⌊(48 − 3)/2⌋ + 1 = 23
    assert alone["a"]["T=97"][-1] == 23 * 8 or alone["a"]["T=97"] == [23 * 8]
    barrier = threading.Barrier(2)

    def run(args):
        barrier.wait()
        return [analyse(*args) for _ in range(5)]

    with ThreadPoolExecutor(2) as pool:
        got_a, got_b = pool.map(run, [(A, 1, BAD_A), (B, 2, BAD_B)])
    assert all(g == alone["a"] for g in got_a)
    assert all(g == alone["b"] for g in got_b)


def test_a_programs_errors_render_its_own_source_after_another_is_loaded():
    prog = dlspec.load(BAD_A.replace("-> reluu", ""), name="spec.dl")
    dlspec.load(BAD_B.replace("-> sigmoidd", ""), name="spec.dl")  # same file name, other text
    assert prog.sources.line("spec.dl", 3) == "  dense 8 "


def test_unrolled_switches_only_its_own_thread():
    from dlspec.backends.tinygrad import scan

    seen = {}
    inside, done = threading.Event(), threading.Event()

    def a():
        with scan.unrolled():
            seen["a"] = scan.enabled()
            inside.set()
            done.wait(10)

    t = threading.Thread(target=a)
    t.start()
    inside.wait(10)
    seen["b"] = scan.enabled()
    done.set()
    t.join()
    assert seen == {"a": False, "b": True} and scan.enabled()


def test_initialiser_draws_a_generator_per_call():
    from dlspec.state import initial

    prog = dlspec.load(A, name="spec.dl")
    g, s = prog.ir("M"), prog.shapes("M")
    first = initial(g, s, 7)
    np.random.seed(123)  # NumPy's global state plays no part
    np.random.standard_normal(10)
    initial(g, s, 8)
    again = initial(g, s, 7)
    assert all(np.array_equal(first[k], again[k]) for k in first)
