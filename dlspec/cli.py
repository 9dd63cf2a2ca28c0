"""The ``dlspec`` command line: thin wrappers over the public API.

Heavy imports (lark, pydantic, tinygrad, graphviz, rich) happen inside the commands,
so ``dlspec --help`` stays fast. Exit codes: 0 ok, 1 a spec/data error, 2 a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: exit 2 with a one-line message
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"dlspec: error: {message}\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dlspec")
    except PackageNotFoundError:  # running from a source tree
        return "0.1.0"


class _VersionAction(argparse.Action):
    """``--version``, looking the version up only when asked (importlib.metadata is slow to import)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help="show program's version number and exit"):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser._print_message(f"dlspec {_version()}\n", sys.stdout)
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="dlspec",
        description="Declarative neural-network specs: check, format, compile, train and draw .dl files.",
        epilog="Run 'dlspec COMMAND --help' for a command's options. Docs: docs/language.md",
    )
    p.add_argument("--version", action=_VersionAction)
    p.add_argument("--debug", action="store_true", help="show Python tracebacks for internal errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser(
        "check", help="parse, expand and validate specs", description="Parse, expand and validate specs; print 'ok' lines or diagnostics."
    )
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--json", action="store_true", help="print diagnostics as JSON objects for editors")
    c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    f = sub.add_parser(
        "fmt",
        help="rewrite specs in canonical layout",
        description="Rewrite specs in canonical layout (comments kept). A file is written only when it changes.",
    )
    f.add_argument("files", nargs="+", metavar="FILE")
    f.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is not formatted")
    f.add_argument("--diff", action="store_true", help="print what would change instead of writing")
    f.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    _add_later_commands(sub)
    return p


def _add_later_commands(sub) -> None:
    """Commands whose modules register their own options (see each module's ``add_arguments``)."""
    try:
        from . import commands
    except ImportError:  # pragma: no cover
        return
    for name, help_, add, _ in commands.COMMANDS:
        sp = sub.add_parser(name, help=help_, description=help_)
        add(sp)
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _color(stream) -> bool:
    return hasattr(stream, "isatty") and stream.isatty() and "NO_COLOR" not in os.environ


def cmd_check(args) -> int:
    from pathlib import Path

    from . import load
    from .errors import DlspecError, UsageError, render_all, to_json

    all_diags = []
    status = EXIT_OK
    for path in args.files:
        try:
            prog = load(Path(path))
            diags = prog.check()
        except UsageError:
            raise
        except DlspecError as e:
            diags = e.diagnostics
            prog = None
        errors = sum(d.severity == "error" for d in diags)
        all_diags.extend(diags)
        if diags and not args.json:
            print(render_all(diags, color=_color(sys.stderr)), file=sys.stderr)
        if errors:
            status = EXIT_ERROR
            if not args.json:
                print(f"{path}: {errors} error{'s' * (errors != 1)}", file=sys.stderr)
        elif not args.json:
            models = ", ".join(prog.models) if prog and prog.models else "no models"
            print(f"ok {path} ({models})")
    if args.json:
        print(to_json(all_diags))
    return status


def cmd_fmt(args) -> int:
    import difflib
    import re
    from pathlib import Path

    from .bounds import read_source
    from .errors import DlspecError, UsageError, render_all
    from .fmt import format_text

    status = EXIT_OK
    for path in args.files:
        p = Path(path)
        try:
            text = read_source(p, path)  # a regular file of at most 1 MiB, UTF-8 (dlspec.bounds)
        except UsageError as e:  # missing, a directory or a device
            print(f"dlspec: error: {e.diagnostics[0].message}", file=sys.stderr)
            return EXIT_USAGE
        except DlspecError as e:  # too large, or not UTF-8 (at the byte)
            print(render_all(e.diagnostics, color=_color(sys.stderr)), file=sys.stderr)
            status = EXIT_ERROR
            continue
        try:
            new = format_text(text, path)
        except DlspecError as e:
            print(render_all(e.diagnostics, color=_color(sys.stderr)), file=sys.stderr)
            status = EXIT_ERROR
            continue
        if new == text:
            continue
        if args.check or args.diff:
            if args.diff:
                # lines as the lexer counts them, each with its end: ``\n`` only (a form feed is not one)
                old_lines, new_lines = ([ln for ln in re.split(r"(?<=\n)", t) if ln] for t in (text, new))
                sys.stdout.writelines(difflib.unified_diff(old_lines, new_lines, path, path + " (formatted)"))
            if args.check:
                print(f"would reformat {path}", file=sys.stderr)
            status = EXIT_ERROR if args.check else status
            continue
        _atomic_write(p, new)
        print(f"formatted {path}")
    return status


def _atomic_write(path, text: str) -> None:
    import tempfile

    d = path.resolve().parent
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handler = {"check": cmd_check, "fmt": cmd_fmt}.get(args.command)
    if handler is None:
        from . import commands

        handler = next(run for name, _, _, run in commands.COMMANDS if name == args.command)
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("dlspec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dlspec compile … | head`: the reader left; stop quietly, as other tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 0
    except Exception as e:  # noqa: BLE001 - the one place internal errors are turned into messages
        from .errors import DlspecError, UsageError, render_all

        if isinstance(e, DlspecError):
            if getattr(args, "debug", False):
                raise
            print(render_all(e.diagnostics, color=_color(sys.stderr)).replace("dlspec: error:", "dlspec: error:"), file=sys.stderr)
            return EXIT_USAGE if isinstance(e, UsageError) else EXIT_ERROR
        if getattr(args, "debug", False):
            raise
        print(
            f"dlspec: internal error: {type(e).__name__}: {e}\n(run with --debug for the traceback, and please report it)", file=sys.stderr
        )
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
