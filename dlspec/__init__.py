"""dlspec: declarative neural-network specs — parse, check, infer shapes, compile, train, draw."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"


def load_weights(net, path, name_map=None, strict: bool = True) -> None:
    """Load a safetensors or PyTorch ``.pt``/``.pth`` state dict into a built model (see
    :func:`dlspec.backends.tinygrad.load_weights`)."""
    from .backends.tinygrad import load_weights as _load

    _load(net, path, name_map=name_map, strict=strict)


# Imported on first use (PEP 562), so that `dlspec --help` loads neither lark nor pydantic.
_LAZY = {
    "Program": "api",
    "load": "api",
    "BackendError": "errors",
    "Diagnostic": "errors",
    "DlspecError": "errors",
    "ParseError": "errors",
    "ResolveError": "errors",
    "ShapeError": "errors",
    "Span": "errors",
    "UsageError": "errors",
    "WriteError": "runfiles",
}

if TYPE_CHECKING:  # pragma: no cover
    from .api import Program, load
    from .errors import BackendError, Diagnostic, DlspecError, ParseError, ResolveError, ShapeError, Span, UsageError
    from .runfiles import WriteError


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'dlspec' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
    "WriteError",
    "__version__",
    "load",
    "load_weights",
]
