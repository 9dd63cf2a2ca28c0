"""dlspec: declarative neural-network specs — parse, check, infer shapes, compile, train, draw."""

from __future__ import annotations

from .api import Program, load
from .errors import BackendError, Diagnostic, DlspecError, ParseError, ResolveError, ShapeError, Span, UsageError

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "Diagnostic",
    "DlspecError",
    "ParseError",
    "Program",
    "ResolveError",
    "ShapeError",
    "Span",
    "UsageError",
    "__version__",
    "load",
]
