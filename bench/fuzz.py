"""A seeded fuzzing campaign of the front end: no input may raise anything but DlspecError.

Each case is a spec from one of the families of ``tests/fuzzgen.py`` (every construct of the
grammar, huge numbers in every position, nesting up to and past the limits, long chains of
block calls, mutated zoo specs, token soup), drawn from ``random.Random(f"{seed}:{i}")``, so
a case depends only on the seed and its number (not on ``--jobs``). Per case: ``load(text)``,
``check()``, each model's ``report()`` encoded as JSON when the check finds no error, and
``format_text(text)``. A case is

- *ok* when those raise nothing or a :class:`dlspec.DlspecError`;
- *internal* when anything else escapes (a bug: the exit code 3 of the command line);
- *slow* when it runs past ``--timeout`` seconds (a SIGALRM; counted apart, not an error).

The summary gives the counts per family and the first ``--show`` internal errors, each with
its input minimised (lines, then tokens, then characters removed while the same exception
type is raised at the same place). Exit code 1 when any case was internal.

Run: ``.venv/bin/python bench/fuzz.py`` (``--cases 100000 --seed 20261202 --jobs 2``; ``--json``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import fuzzgen  # noqa: E402

SEED = 20261202
MEMORY_LIMIT = 4 << 30  # per worker: a runaway allocation becomes a MemoryError (an internal error)


class Slow(BaseException):
    """Raised by the alarm: a BaseException, so that no ``except Exception`` in dlspec eats it."""


def _alarm(signum, frame):
    raise Slow()


def run_case(text: str) -> None:
    """The property: raises only DlspecError (and Slow)."""
    fuzzgen.only_dlspec_errors(text)


def signature(e: BaseException) -> tuple[str, str]:
    """An internal error's type and the innermost frame of dlspec that raised it."""
    where = ""
    for fr in traceback.extract_tb(e.__traceback__):
        if "/dlspec/" in fr.filename:
            where = f"{fr.filename.rsplit('/dlspec/', 1)[1]}:{fr.lineno}"
    return type(e).__name__, where


def outcome(text: str, timeout: float) -> tuple[str, tuple[str, str] | None, str]:
    """('ok' | 'internal' | 'slow', signature, message) of one case under the alarm."""
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        run_case(text)
        return "ok", None, ""
    except Slow:
        return "slow", None, ""
    except BaseException as e:  # noqa: BLE001 - an internal error is what we count
        if isinstance(e, KeyboardInterrupt):
            raise
        return "internal", signature(e), f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def make_case(seed: int, i: int) -> tuple[str, str]:
    """Case ``i``: (family, text)."""
    rng = random.Random(f"{seed}:{i}")
    names = list(fuzzgen.FAMILIES)
    weights = [fuzzgen.FAMILIES[n][1] for n in names]
    fam = rng.choices(names, weights)[0]
    return fam, fuzzgen.FAMILIES[fam][0](fuzzgen.RandomChooser(rng))


def minimise(text: str, sig: tuple[str, str], timeout: float, budget: int = 3000) -> str:
    """Greedy delta debugging: drop chunks of lines, then of tokens, then of characters,
    while the case still fails with the same signature."""

    def fails(t: str) -> bool:
        nonlocal budget
        budget -= 1
        status, s, _ = outcome(t, timeout)
        return status == "internal" and s == sig

    for split, join in ((lambda t: t.split("\n"), "\n"), (fuzzgen.TOKEN_RE.findall, " "), (list, "")):
        units = split(text)
        if join == " " and join.join(units) != text and not fails(join.join(units)):
            continue  # re-joining tokens with spaces changes the failure: skip this level
        n = max(1, len(units) // 2)
        while n >= 1 and budget > 0:
            i, changed = 0, False
            while i < len(units) and budget > 0:
                trial = units[:i] + units[i + n :]
                if trial and fails(join.join(trial)):
                    units, changed = trial, True
                else:
                    i += n
            if not changed:
                n //= 2
        text = join.join(units)
    return text


def _init_worker(workdir: str) -> None:
    os.chdir(workdir)  # imports of the specs resolve here (an empty directory)
    signal.signal(signal.SIGALRM, _alarm)
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT if hard == resource.RLIM_INFINITY else min(MEMORY_LIMIT, hard), hard))
    except (ValueError, OSError):  # pragma: no cover - not allowed here
        pass


def _work(args: tuple[int, int, float]) -> tuple[int, str, str, tuple | None, str, float]:
    seed, i, timeout = args
    fam, text = make_case(seed, i)
    t = time.perf_counter()
    status, sig, msg = outcome(text, timeout)
    return i, fam, status, sig, msg, time.perf_counter() - t


def campaign(cases: int, seed: int, timeout: float, jobs: int, show: int) -> dict:
    """Run the cases; return the summary (and the minimised first failures)."""
    start = time.time()
    cpu0 = time.process_time()
    by_family: Counter = Counter()
    internal: Counter = Counter()
    slow_family: Counter = Counter()
    failures: list[dict] = []
    slow_cases: list[dict] = []
    sigs: dict[tuple, int] = {}
    slowest = (0.0, -1)
    workdir = tempfile.mkdtemp(prefix="dlspec-fuzz-")
    work = ((seed, i, timeout) for i in range(cases))
    if jobs > 1:
        pool = multiprocessing.get_context("fork").Pool(jobs, _init_worker, (workdir,))
        results = pool.imap_unordered(_work, work, chunksize=64)
    else:
        pool = None
        _init_worker(workdir)
        results = map(_work, work)
    done = 0
    for i, fam, status, sig, msg, dt in results:
        done += 1
        by_family[fam] += 1
        slowest = max(slowest, (dt, i))
        if status == "internal":
            internal[fam] += 1
            sigs[sig] = sigs.get(sig, 0) + 1
            if len(failures) < 1000 and sigs[sig] == 1:
                failures.append({"case": i, "family": fam, "signature": sig, "message": msg})
        elif status == "slow":
            slow_family[fam] += 1
            if len(slow_cases) < 20:
                slow_cases.append({"case": i, "family": fam})
        if done % 5000 == 0:
            print(
                f"  {done:,} cases, {sum(internal.values())} internal, {sum(slow_family.values())} slow, {time.time() - start:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    if pool is not None:
        pool.close()
        pool.join()
        _init_worker(workdir)
    failures.sort(key=lambda f: f["case"])
    for f in failures[:show]:
        _, text = make_case(seed, f["case"])
        f["input_chars"] = len(text)
        f["minimal"] = minimise(text, tuple(f["signature"]), timeout)
    for s in slow_cases:
        _, text = make_case(seed, s["case"])
        s["input"] = text if len(text) <= 300 else text[:300] + f"… ({len(text):,} characters)"
    return {
        "cases": cases,
        "seed": seed,
        "timeout_s": timeout,
        "jobs": jobs,
        "internal": sum(internal.values()),
        "distinct_internal": len(sigs),
        "slow": sum(slow_family.values()),
        "seconds": round(time.time() - start, 1),
        "cpu_seconds_main": round(time.process_time() - cpu0, 1),
        "slowest_case": {"case": slowest[1], "seconds": round(slowest[0], 2)},
        "families": {f: {"cases": by_family[f], "internal": internal[f], "slow": slow_family[f]} for f in fuzzgen.FAMILIES},
        "failures": failures[:show],
        "signatures": [{"signature": list(k), "cases": v} for k, v in sorted(sigs.items(), key=lambda kv: -kv[1])],
        "slow_cases": slow_cases,
        "python": platform.python_version(),
    }


def print_summary(r: dict) -> None:
    print(f"fuzz: {r['cases']:,} cases, seed {r['seed']}, timeout {r['timeout_s']} s, {r['jobs']} job(s), {r['seconds']} s")
    print(f"internal errors: {r['internal']} ({r['distinct_internal']} distinct); slow cases: {r['slow']}")
    print(f"slowest case: #{r['slowest_case']['case']} {r['slowest_case']['seconds']} s")
    print("| family | cases | internal | slow |\n|---|---|---|---|")
    for f, c in r["families"].items():
        print(f"| {f} | {c['cases']:,} | {c['internal']} | {c['slow']} |")
    for s in r["signatures"][:20]:
        print(f"  {s['cases']:6} × {s['signature'][0]} at {s['signature'][1]}")
    for f in r["failures"]:
        print(f"\n--- case {f['case']} ({f['family']}): {f['message']}")
        print(f"minimal input ({len(f['minimal'])} of {f['input_chars']} characters): {f['minimal']!r}")
    for s in r["slow_cases"][:5]:
        print(f"\n--- slow case {s['case']} ({s['family']}): {s['input']!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--timeout", type=float, default=3.0, help="seconds per case before it counts as slow")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--show", type=int, default=5, help="internal errors to minimise and print")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    r = campaign(args.cases, args.seed, args.timeout, args.jobs, args.show)
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print_summary(r)
    return 1 if r["internal"] else 0


if __name__ == "__main__":
    sys.exit(main())
