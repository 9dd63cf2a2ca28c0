"""Commands beyond check/fmt, registered here without importing their (heavy) modules.

Each entry: (name, help, add_arguments(parser), run(args) -> exit code)."""

from __future__ import annotations

from typing import Callable

COMMANDS: list[tuple[str, str, Callable, Callable]] = []
