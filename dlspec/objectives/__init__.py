"""Objectives beyond classification: ``train autoencoder M``, ``train vae M``,
``train gan generator G, discriminator D`` and ``train dqn M``.

``dlspec train`` resolves a spec's section (:func:`dlspec.train.resolve`), and for these kinds hands
over to :func:`train_command`. Each objective is a module (:mod:`.classifier`, :mod:`.autoencoder`,
:mod:`.gan`, :mod:`.dqn`) on the one loop every objective shares (:mod:`dlspec.loop`), with a run
directory like the classifier's: ``spec.dl``, ``config.json``, ``metrics.jsonl``, ``last.safetensors`` (atomic), the
learning curves as SVG and PNG, and PNG image grids. ``dlspec sample`` (:mod:`.sample`) draws a
grid of generated images from trained weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..loop import runner, train_command
from .config import ObjectiveConfig, resolve

__all__ = ["ObjectiveConfig", "resolve", "runner", "train_command", "resume_objective"]


def resume_objective(args, run_dir: Path, overrides: dict[str, Any]) -> int:
    """``dlspec train --resume DIR`` (every objective's: :func:`dlspec.loop.resume_command`)."""
    from ..loop import resume_command

    return resume_command(args, run_dir, overrides)


def final_table(summary: dict) -> Any:
    """The first and last epoch's metrics (or a DQN's evaluation; a classifier's splits) as a rich table."""
    from rich.table import Table

    kind = summary.get("kind", "classifier")
    if kind == "classifier":
        from ..progress import final_table as splits

        return splits(summary)
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
    from ..progress import devices_text

    t = Table(
        title=f"{summary['model']} ({kind}) — {summary['epochs']} epochs, {summary['wall_seconds']} s on {devices_text(summary['device'])}",
        title_justify="left",
    )
    t.add_column("metric")
    t.add_column("first epoch", justify="right")
    t.add_column("last epoch", justify="right")
    for k, v in summary["metrics"].items():
        first = summary.get("first", {}).get(k)
        t.add_row(k, "" if first is None else f"{first:.4f}", f"{v:.4f}")
    return t
