"""The public Python API: ``dlspec.load(path_or_text) -> Program``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import ast as A
from .errors import Diagnostic, DlspecError, Note, ResolveError, Span, UsageError, suggest
from .expand import Expander, Fail, Scope, _Silent
from .ir import Graph, TrainSpec
from .parse import parse


class Program:
    """A parsed spec with its imports: models, blocks, cells and train sections."""

    def __init__(self, file: str, module: A.Module, defs: dict[str, A.Def], trains: list[A.Train]):
        self.file = file
        self.module = module
        self.defs = defs
        self._trains = trains
        self._ir: dict[tuple, Graph] = {}

    @property
    def models(self) -> list[str]:
        """Names of the models defined in the file itself (not its imports), in order."""
        return [i.name for i in self.module.items if isinstance(i, A.Def) and i.kind == "model"]

    def ir(self, model: str | None = None, **args: Any) -> Graph:
        """The resolved graph IR of ``model`` (default: the only or last model)."""
        name = self._model_name(model)
        key = (name, tuple(sorted(args.items())))
        if key not in self._ir:
            self._ir[key] = Expander(self.defs).model(self.defs[name], args)
        return self._ir[key]

    def trains(self) -> list[TrainSpec]:
        """The validated ``train`` sections."""
        from . import trainspec

        out, diags = [], []
        models = {d.name: d.name_span for d in self.defs.values() if d.kind == "model"}
        for t in self._trains:
            spec, ds = trainspec.validate(t, models, self._evaluate)
            diags.extend(ds)
            if spec:
                out.append(spec)
        if diags:
            raise ResolveError(diags)
        return out

    def _evaluate(self, e: A.Expr) -> Any:
        return Expander(self.defs).value(e, Scope(prefix="", names={}, stack=()))

    def _model_name(self, model: str | None) -> str:
        models = self.models
        if model is None:
            if not models:
                raise UsageError(f"{self.file} defines no model")
            return models[-1]
        if model not in self.defs or self.defs[model].kind != "model":
            raise UsageError(f"{self.file} has no model '{model}'{suggest(model, models)}; models: {', '.join(models) or 'none'}")
        return model

    def check(self) -> list[Diagnostic]:
        """Every diagnostic of every model and train section (empty when all is well)."""
        diags: list[Diagnostic] = []
        for m in self.models:
            try:
                self.ir(m)
            except DlspecError as e:
                diags.extend(e.diagnostics)
        try:
            self.trains()
        except DlspecError as e:
            diags.extend(e.diagnostics)
        return diags

    def __repr__(self) -> str:
        return f"Program({self.file!r}, models={self.models})"


def load(source: str | Path, name: str | None = None) -> Program:
    """Parse a spec (a path, or the text itself) and its imports into a :class:`Program`.

    Raises :class:`dlspec.DlspecError` with ``.diagnostics`` on any mistake."""
    if isinstance(source, Path) or ("\n" not in source and "{" not in source and source.endswith(".dl")):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"no such file: {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read {path}: {e}") from None
        file = name or str(source)
        base = path.resolve().parent
    else:
        text = str(source)
        file = name or "<string>"
        base = Path.cwd()
    module = parse(text, file)
    defs: dict[str, A.Def] = {}
    trains: list[A.Train] = []
    _collect(module, file, base, defs, trains, set(), [], top=True)
    return Program(file, module, defs, trains)


def _collect(module: A.Module, file: str, base: Path, defs: dict, trains: list, seen: set, chain: list, top: bool) -> None:
    diags: list[Diagnostic] = []
    for item in module.items:
        if isinstance(item, A.Import):
            target = (base / item.path).resolve()
            if target in chain:
                diags.append(Diagnostic(f"import cycle: '{item.path}' imports this file again", item.span))
                continue
            if target in seen:
                continue
            seen.add(target)
            try:
                text = target.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                why = "no such file" if isinstance(e, FileNotFoundError) else str(e)
                diags.append(Diagnostic(f"cannot import '{item.path}': {why}", item.span))
                continue
            try:
                sub = parse(text, str(Path(item.path) if not Path(item.path).is_absolute() else target))
                _collect(sub, str(target), target.parent, defs, [], seen, chain + [target], top=False)
            except DlspecError as e:
                for d in e.diagnostics:
                    d.notes.append(Note(f"imported from {item.span}", item.span))
                diags.extend(e.diagnostics)
        elif isinstance(item, A.Def):
            if item.name in defs:
                prev = defs[item.name]
                if top or prev.span.file == item.span.file:
                    diags.append(
                        Diagnostic(f"'{item.name}' is defined twice", item.name_span, notes=[Note("first defined here", prev.name_span)])
                    )
                    continue
            dup = [p for i, p in enumerate(item.params or ()) if p.name in [q.name for q in (item.params or ())[:i]]]
            for p in dup:
                diags.append(Diagnostic(f"parameter '{p.name}' is declared twice", p.span))
            defs[item.name] = item
        elif isinstance(item, A.Train):
            trains.append(item)
    if diags:
        raise ResolveError(diags)


__all__ = ["Program", "load", "Fail", "_Silent", "Span"]
