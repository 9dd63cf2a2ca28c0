"""Progress display of ``dlspec train``: an epoch bar and a step bar with loss, accuracy,
samples/s and ETA, and a visible kernel-compiling phase; plain log lines with ``--quiet``."""

from __future__ import annotations

import sys
from typing import Any


class RichUI:
    """Live bars on stderr (rich)."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = console if console is not None else Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.epoch_task: Any = None
        self.step_task: Any = None

    def __enter__(self) -> "RichUI":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def log(self, msg: str) -> None:
        self.progress.console.print(msg, highlight=False)

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if self.epoch_task is None:
            self.epoch_task = self.progress.add_task("epochs", total=epochs, completed=epoch, info="")
        else:
            self.progress.update(self.epoch_task, completed=epoch)
        if self.step_task is not None:
            self.progress.remove_task(self.step_task)
        self.step_task = self.progress.add_task(f"epoch {epoch + 1}", total=steps, info="")

    def step(self, i: int, loss: float, acc: float, rate: float, compiling: bool) -> None:
        info = (
            "compiling kernels (first run only, cached afterwards)…"
            if compiling
            else f"loss {loss:.4f}  acc {acc:.3f}  {rate:,.0f} samples/s"
        )
        self.progress.update(self.step_task, completed=i, info=info)

    def end(self, epochs_done: int) -> None:
        if self.epoch_task is not None:
            self.progress.update(self.epoch_task, completed=epochs_done)


class QuietUI:
    """No bars: log lines only."""

    def __enter__(self) -> "QuietUI":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        return None

    def step(self, *a: Any) -> None:
        return None

    def end(self, epochs_done: int) -> None:
        return None


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def devices_text(device: Any) -> str:
    """A summary's ``device`` for a title: ``CPU``, or ``CPU, CPU:1`` for a data-parallel run's list."""
    return ", ".join(map(str, device)) if isinstance(device, (list, tuple)) else str(device)


def final_table(summary: dict) -> Any:
    """Train, validation and test metrics as a rich table."""
    from rich.table import Table

    epochs = summary["epochs"]
    title = f"{summary['model']}: {epochs} epoch{'s' * (epochs != 1)}, {summary['steps']:,} steps, {_duration(summary['wall_seconds'])} on {devices_text(summary['device'])}"
    t = Table(title=title, title_justify="left", min_width=len(title))
    t.add_column("split")
    t.add_column("loss", justify="right")
    t.add_column("accuracy", justify="right")
    for split in ("train", "val", "test"):
        m = summary.get(split)
        if m:
            t.add_row(
                split, f"{m['loss']:.4f}", f"{m['accuracy'] * 100:.2f}%" + (f" (top-5 {m['top5'] * 100:.2f}%)" if "top5" in m else "")
            )
    return t


def print_summary(summary: dict, as_json: bool, table=None) -> None:
    """A finished run's summary on stdout: JSON (``--json``) or its final table
    (``table(summary)``, default :func:`final_table`)."""
    import json

    if as_json:
        print(json.dumps(summary, indent=2))
        return
    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=100)
    console.print((table or final_table)(summary))
