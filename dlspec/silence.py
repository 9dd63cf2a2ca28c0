"""The warnings a spec may silence where the behaviour is intended: ``conv 64 kernel 7 stride 2,
ok drop_border`` (docs/language.md, "Diagnostics"). Each warning that can be silenced has a
name here; a layer's ``ok NAME`` (or ``ok [NAME, NAME]``) silences those warnings of that layer
only, and an ``ok`` that silences nothing is itself a warning (as ruff's unused ``noqa``)."""

from __future__ import annotations

#: warning name → what it warns about (shown in the warning's help and in the docs)
WARNINGS: dict[str, str] = {
    "drop_border": "a convolution's last windows do not reach the input's end: border rows are never seen",
    "pad_nothing": "a pad of zero on every side",
    "dropout_unused": "a recurrent layer's dropout with one layer (PyTorch applies it between layers)",
    "tuple_concat": "a tuple given to a layer that takes one tensor is concatenated",
}


def hint(name: str) -> str:
    """The help's tail that names the way to silence warning ``name``."""
    return f"or, if it is meant, silence it at the layer: ', ok {name}'"
