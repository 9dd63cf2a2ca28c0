"""The layer tree's pieces: what ``get_state_dict`` walks and what it must not."""

from __future__ import annotations

from typing import Any


class Hidden:
    """Holds a reference that ``get_state_dict`` must not walk (a tied weight's owner,
    the graph). No ``__dict__``, not a container."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


class Container:
    """A level of the layer tree (``layer2``, ``layer2.0``)."""
