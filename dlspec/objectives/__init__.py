"""Objectives beyond classification: ``train autoencoder M``, ``train vae M``,
``train gan generator G, discriminator D`` and ``train dqn M``.

``dlspec train`` resolves a spec's section (:func:`dlspec.train.resolve`), and for these kinds hands
over to :func:`train_command`. Each objective has its own loop (:mod:`.autoencoder`, :mod:`.gan`,
:mod:`.dqn`), progress lines/bars in :mod:`dlspec.progress`'s style, and a run directory like the
classifier's: ``spec.dl``, ``config.json``, ``metrics.jsonl``, ``last.safetensors`` (atomic), the
learning curves as SVG and PNG, and PNG image grids. ``dlspec sample`` (:mod:`.sample`) draws a
grid of generated images from trained weights.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .config import ObjectiveConfig, resolve

__all__ = ["ObjectiveConfig", "resolve", "runner", "train_command", "resume_objective"]


def runner(prog, cfg: ObjectiveConfig, run_dir: Path, log, ui: Any = None):
    """The run object of ``cfg.kind`` (``.run(resume=False) -> summary``): the class its
    :data:`dlspec.registry.OBJECTIVES` entry names."""
    import importlib

    from ..registry import OBJECTIVES

    entry = OBJECTIVES.get(cfg.kind)
    if entry is None or cfg.kind == "classifier":  # pragma: no cover - resolve() only makes the other kinds
        raise ValueError(cfg.kind)
    module, _, name = entry.runner.partition(":")
    return getattr(importlib.import_module(module), name)(prog, cfg, run_dir, log, ui)


def train_command(args, prog, cfg: ObjectiveConfig, run_dir: Path | None = None, resume: bool = False) -> int:
    """``dlspec train`` for an objective: a new run directory (or ``run_dir`` to resume), the loop,
    and the final table (``--json``: the summary)."""
    import shutil

    from ..errors import DlspecError, UsageError
    from ..progress import QuietUI, RichUI, print_summary
    from ..runfiles import WriteError
    from ..train import start_run_dir, stopped

    episodes = getattr(args, "episodes", None)
    if episodes is not None and run_dir is None:
        if cfg.kind != "dqn":
            raise UsageError(f"--episodes applies to 'train dqn' only; 'train {cfg.kind}' trains for --epochs")
        if episodes < 1:
            raise UsageError(f"--episodes must be positive, got {episodes}")
        cfg = cfg.model_copy(update={"episodes": episodes})
    new = run_dir is None
    if run_dir is None:
        run_dir = start_run_dir(Path(args.out), cfg.model, args.file, cfg.model_dump_json(indent=2))
    quiet = args.quiet or args.json or not sys.stderr.isatty()
    ui = QuietUI() if quiet else RichUI()
    with ui:
        ui.log(f"run directory {run_dir}")
        try:
            summary = runner(prog, cfg, run_dir, ui.log, ui).run(resume=resume)
        except DlspecError as e:
            if new and {p.name for p in run_dir.iterdir()} <= {"config.json", "spec.dl"}:
                shutil.rmtree(run_dir)  # failed before it wrote anything of its own: leave no half-made run behind
            if isinstance(e, WriteError):
                raise stopped(e, run_dir) from None
            raise
    print_summary(summary, args.json, final_table)
    return 0


def resume_objective(args, run_dir: Path, overrides: dict[str, Any]) -> int | None:
    """``dlspec train --resume DIR`` of an objective run (None: the run is a classifier's)."""
    from .. import load
    from ..errors import UsageError
    from ..train import atomic_write_text, check_resume_overrides

    try:
        raw = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the classifier path reports it
    if not isinstance(raw, dict) or raw.get("kind", "classifier") == "classifier":
        return None
    try:
        cfg = ObjectiveConfig(**raw)
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"{run_dir}/config.json is not a valid run configuration: {e}") from None
    check_resume_overrides(overrides)
    episodes = getattr(args, "episodes", None)
    if cfg.kind == "dqn":
        if "epochs" in overrides:
            raise UsageError("--epochs does not apply to 'train dqn' (it learns from its environment; use --episodes)")
        if episodes is not None:
            if episodes < 1:
                raise UsageError(f"--episodes must be positive, got {episodes}")
            overrides = {**overrides, "episodes": episodes}
    elif episodes is not None:
        raise UsageError(f"--episodes applies to 'train dqn' only; 'train {cfg.kind}' trains for --epochs")
    cfg = cfg.model_copy(update=overrides)
    prog = load(run_dir / "spec.dl", name=str(run_dir / "spec.dl"))
    atomic_write_text(run_dir / "config.json", cfg.model_dump_json(indent=2))
    # no checkpoint yet (killed before its first epoch ended): trains from the start (see train.start_over)
    return train_command(args, prog, cfg, run_dir=run_dir, resume=(run_dir / "last.safetensors").is_file())


def final_table(summary: dict) -> Any:
    """The first and last epoch's metrics (or a DQN's evaluation) as a rich table."""
    from rich.table import Table

    kind = summary["kind"]
    if kind == "dqn":
        t = Table(
            title=f"{summary['model']} on {summary['env']} — {summary['episodes']} episodes, {summary['env_steps']:,} env steps, {summary['train_wall_seconds']} s",
            title_justify="left",
        )
        t.add_column("evaluation")
        t.add_column("value", justify="right")
        t.add_row(f"mean return over {summary['eval_episodes']} greedy episodes", f"{summary['eval_mean_return']:.1f}")
        t.add_row("min / max", f"{summary['eval_min_return']:.0f} / {summary['eval_max_return']:.0f}")
        t.add_row("best weights from episode", str(summary["best_episode"]))
        t.add_row("solved (≥ 195)", "yes" if summary["solved"] else "no")
        return t
    t = Table(
        title=f"{summary['model']} ({kind}) — {summary['epochs']} epochs, {summary['wall_seconds']} s on {summary['device']}",
        title_justify="left",
    )
    t.add_column("metric")
    t.add_column("first epoch", justify="right")
    t.add_column("last epoch", justify="right")
    for k, v in summary["metrics"].items():
        first = summary.get("first", {}).get(k)
        t.add_row(k, "" if first is None else f"{first:.4f}", f"{v:.4f}")
    return t
