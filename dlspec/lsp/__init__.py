"""``dlspec lsp``: a Language Server over stdio (pygls, the optional extra ``dlspec[lsp]``).

:mod:`dlspec.lsp.analysis` is the logic as plain data (no pygls); :mod:`dlspec.lsp.server`
wires it to LSP messages. pygls is imported only when the command runs.
"""

from __future__ import annotations

import sys

INSTALL = "pip install 'dlspec[lsp]'"


def run(args) -> int:
    """Serve LSP on stdin/stdout until the client says exit."""
    try:
        import lsprotocol  # noqa: F401
        import pygls  # noqa: F401
    except ImportError:
        print(f"dlspec: error: 'dlspec lsp' needs pygls, which is not installed; install it with: {INSTALL}", file=sys.stderr)
        return 2
    import logging

    if args.log:
        logging.basicConfig(filename=args.log, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    else:
        logging.getLogger("pygls").addHandler(logging.NullHandler())
        logging.getLogger("pygls").propagate = False
    from ..cli import _version
    from .server import make_server

    make_server(_version()).start_io()
    return 0
