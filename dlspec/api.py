"""The public Python API: ``dlspec.load(path_or_text) -> Program``."""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import ast as A
from .bounds import SourceProblem, decode, number_problem, read_bytes, read_source
from .errors import Diagnostic, DlspecError, Note, ResolveError, Sources, Span, UsageError, current_sources, suggest, using_sources
from .expand import Expander, Fail, Scope, _Silent
from .ir import Graph, TrainSpec
from .limits import deep
from .parse import parse


class Program:
    """A parsed spec with its imports: models, blocks, cells and train sections."""

    def __init__(self, file: str, module: A.Module, defs: dict[str, A.Def], trains: list[A.Train]):
        self.file = file
        self.module = module
        self.defs = defs
        self._trains = trains
        self._ir: dict[tuple, Graph] = {}
        self.sources = Sources()  # the files it was parsed from (set by load): what its errors render with
        #: (definition, parameter) → value: parameters bound by :meth:`bind`
        self._defaults: dict[tuple[str, str], Any] = {}

    @property
    def models(self) -> list[str]:
        """Names of the models defined in the file itself (not its imports), in order."""
        return [i.name for i in self.module.items if isinstance(i, A.Def) and i.kind == "model"]

    @deep(lambda self, model=None, *a, **k: _where(self, model))
    def ir(self, model: str | None = None, **args: Any) -> Graph:
        """The resolved graph IR of ``model`` (default: the only or last model)."""
        name = self._model_name(model)
        for k, v in args.items():  # the value rule holds for arguments given from Python too
            problem = next(filter(None, map(number_problem, v if isinstance(v, (tuple, list)) else (v,))), None)
            if problem is not None:
                raise UsageError(f"argument {k} of model '{name}' {problem}")
        key = (name, _args_key(args))
        if key not in self._ir:
            with _gc_paused():  # a list from Python is a list of the language (a tuple), as a table
                self._ir[key] = Expander(self.defs, self._defaults).model(self.defs[name], dict(key[1]))
        return self._ir[key]

    @property
    def params(self) -> dict[str, Any]:
        """The parameters bound by :meth:`bind`, as ``{"DEF.NAME": value}``."""
        return {f"{d}.{p}": v for (d, p), v in self._defaults.items()}

    def bind(self, params: dict[str, Any]) -> "Program":
        """A copy of the program in which parameters take the values of ``params`` wherever a
        call (or :meth:`ir`'s ``args``) gives them none, instead of their written defaults:
        ``"NAME"`` is the parameter NAME of each of the file's models that declares it,
        ``"DEF.NAME"`` the parameter NAME of the model, block or cell DEF (imported ones too). The
        values are those :meth:`ir`'s ``args`` take. An unknown name is a :class:`UsageError` with a
        did-you-mean; this program is unchanged."""
        defaults = dict(self._defaults)
        for key, value in params.items():
            problem = next(filter(None, map(number_problem, value if isinstance(value, (tuple, list)) else (value,))), None)
            if problem is not None:
                raise UsageError(f"parameter {key} {problem}")
            value = _args_key({"v": value})[0][1]  # a list is the language's list (a tuple)
            owner, dot, name = key.rpartition(".")
            if dot:
                defn = self.defs.get(owner)
                if defn is None:
                    raise UsageError(f"{self.file} has no model, block or cell '{owner}'{suggest(owner, self.defs)}")
                names = [p.name for p in defn.params or ()]
                if name not in names:
                    listed = f"; its parameters: {', '.join(names)}" if names else f"; '{owner}' takes none"
                    raise UsageError(f"{defn.kind} '{owner}' has no parameter '{name}'{suggest(name, names) or listed}")
                defaults[(owner, name)] = value
                continue
            owners = [m for m in self.models if name in [p.name for p in self.defs[m].params or ()]]
            if not owners:
                names = sorted({p.name for m in self.models for p in self.defs[m].params or ()})
                listed = f"; their parameters: {', '.join(names)}" if names else "; they take none"
                raise UsageError(f"no model of {self.file} has a parameter '{name}'{suggest(name, names) or listed}")
            for m in owners:
                defaults[(m, name)] = value
        prog = Program(self.file, self.module, self.defs, self._trains)
        prog.sources, prog._defaults = self.sources, defaults
        return prog

    @deep(lambda self, model=None, *a, **k: _where(self, model))
    def shapes(self, model: str | None = None, **args: Any):
        """Static shapes and costs of ``model`` (:class:`dlspec.shapes.Shapes`); raises
        :class:`dlspec.ShapeError` with every shape error of the model."""
        from .shapes import infer

        name = self._model_name(model)
        key = ("shapes", name, _args_key(args))
        if key not in self._ir:
            self._ir[key] = infer(self.ir(name, **args))
        return self._ir[key]

    @deep(lambda self, model=None, *a, **k: _where(self, model))
    def analyze(self, model: str | None = None, depth: int | None = None, seq: dict[str, int] | None = None, **args: Any):
        """The full :class:`dlspec.report.Report` (rows, totals, memory, receptive field)."""
        from .report import build

        name = self._model_name(model)
        return build(self.ir(name, **args), self.shapes(name, **args), depth=depth, seq=seq)

    @deep(lambda self, model=None, *a, **k: _where(self, model))
    def report(self, model: str | None = None, depth: int | None = None, seq: dict[str, int] | None = None, **args: Any) -> dict:
        """The model's report as in ``dlspec compile --json``: name, inputs, outputs,
        params, trainable_params, buffers, macs, layers."""
        return self.analyze(model, depth=depth, seq=seq, **args).to_json()

    @deep(lambda self, model=None, *a, **k: _where(self, model))
    def build(
        self,
        model: str | None = None,
        device: str | tuple[str, ...] | list[str] | None = None,
        seed: int = 0,
        dtype: str = "float32",
        sync_bn: bool = False,
        **args: Any,
    ):
        """A runnable tinygrad model (:class:`dlspec.backends.tinygrad.Net`) with seeded
        PyTorch-default initialisation; ``get_state_dict(net)`` keys are the layer paths. Several
        devices (``device=("CUDA:0", "CUDA:1")``): data parallel, each batch split across them
        (``sync_bn``: batch norm with the statistics of the whole batch; see
        :func:`dlspec.backends.tinygrad.build`)."""
        from .backends.tinygrad import build

        name = self._model_name(model)
        return build(self.ir(name, **args), self.shapes(name, **args), device=device, seed=seed, dtype=dtype, sync_bn=sync_bn)

    @deep(lambda self, model=None, *a, **k: _where(self, model))
    def export(
        self,
        model: str | None,
        target: str,
        path: str | Path,
        *,
        weights: str | Path | None = None,
        name_map: dict[str, str] | str | Path | None = None,
        seed: int = 0,
        fixed: dict[str, int] | None = None,
        **args: Any,
    ) -> Path:
        """Write ``model`` for ``target`` — ``"onnx"`` (an ONNX model) or ``"pytorch"`` (a standalone
        PyTorch module) — to ``path``, atomically, with the weights of the file ``weights`` (a
        safetensors or PyTorch state dict, or a dlspec run's checkpoint; checked against the model
        first) or the seeded initialisation. ``fixed`` gives symbolic sizes fixed values (``{"N": 1,
        "T": 128}``) instead of dynamic axes; ``args`` bind the model's parameters. Returns the path."""
        from .backends import export

        name = self._model_name(model)
        graph, shapes = self.ir(name, **args), self.shapes(name, **args)
        return export(target, graph, shapes, path, weights=weights, name_map=name_map, seed=seed, fixed=fixed)

    @deep(lambda self, model=None, *a, **k: _where(self, model))
    def draw(self, model: str | None = None, **options: Any):
        """The model's diagram as a :class:`graphviz.Digraph` (``.source`` is its DOT text).
        Options: ``depth``, ``rankdir`` ("TB"/"LR"), ``activations``, ``fold_repeats``,
        ``cells``, ``phase`` ("train"/"eval"); see :func:`dlspec.draw.draw`."""
        from .draw import OPTIONS, draw

        args = {k: v for k, v in options.items() if k not in OPTIONS}
        name = self._model_name(model)
        return draw(self.analyze(name, **args), **{k: v for k, v in options.items() if k in OPTIONS})

    @deep(lambda self, model=None, *a, **k: _where(self, model))
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
        from .trainspec import _Bad

        try:
            return Expander(self.defs).value(e, Scope(prefix="", names={}, stack=()))
        except Fail as f:  # an unknown name or a layer where a value belongs: a diagnostic, not a crash
            raise _Bad(f.diag.message, f.diag.span or e.span, f.diag.help) from None
        except _Silent:  # pragma: no cover - no poisoned values outside a model
            raise _Bad("invalid value", e.span) from None

    def _model_name(self, model: str | None) -> str:
        models = self.models
        if model is None:
            if not models:
                raise UsageError(f"{self.file} defines no model")
            return models[-1]
        if model not in self.defs or self.defs[model].kind != "model":
            raise UsageError(f"{self.file} has no model '{model}'{suggest(model, models)}; models: {', '.join(models) or 'none'}")
        return model

    @deep(lambda self, model=None, *a, **k: _where(self, model))
    def check(self) -> list[Diagnostic]:
        """Every diagnostic (errors and warnings) of every model — names, arguments, shapes —
        and train section; no errors means the spec is right."""
        diags: list[Diagnostic] = []
        if not self.module.items:  # only comments or blanks: most likely a truncated or wrong file
            where = Span(file=self.file, line=1, col=1, end_line=1, end_col=2)
            diags.append(
                Diagnostic(
                    "the file defines nothing: no model, block, cell, import or train section",
                    where,
                    help="a spec starts with 'model NAME { … }'",
                )
            )
        for m in self.models:
            try:
                diags.extend(self.shapes(m).warnings)
            except DlspecError as e:
                diags.extend(e.diagnostics)
        try:
            self.trains()
        except DlspecError as e:
            diags.extend(e.diagnostics)
        return diags

    def __repr__(self) -> str:
        return f"Program({self.file!r}, models={self.models})"


def _where(prog: Program, model: Any = None) -> Span:
    """Where a pass over ``model`` that fails as a whole is reported: the model's name."""
    try:
        return prog.defs[prog._model_name(model if isinstance(model, str) else None)].name_span
    except (DlspecError, KeyError):
        return Span(file=prog.file, line=1, col=1, end_line=1, end_col=2)


@deep()
def load(source: str | Path, name: str | None = None) -> Program:
    """Parse a spec (a path, or the text itself) and its imports into a :class:`Program`.

    Raises :class:`dlspec.DlspecError` with ``.diagnostics`` on any mistake."""
    if isinstance(source, Path) or ("\n" not in source and "{" not in source and (source.endswith(".dl") or os.path.exists(source))):
        path = Path(source)
        file = name or str(source)
        text = read_source(path, file)  # a regular file of at most 1 MiB, UTF-8 (dlspec.bounds)
        base = path.resolve().parent
        top = [path.resolve()]  # a file importing itself (directly or not) is a cycle
    else:
        text = str(source)
        file = name or "<string>"
        base = Path.cwd()
        top = []
    defs: dict[str, A.Def] = {}
    trains: list[A.Train] = []
    own = Sources()  # this program's files: its errors render from them, whatever else is loaded meanwhile
    outer = current_sources()
    try:
        with _gc_paused(), using_sources(own):
            module = parse(text, file)
            _collect(module, file, base, defs, trains, set(top), top, top=True)
    finally:
        outer.text.update(own.text)  # the thread's registry too (what the CLI renders with)
    prog = Program(file, module, defs, trains)
    prog.sources = own
    return prog


def _args_key(args: dict[str, Any]) -> tuple:
    """Model arguments as a cache key and as the expander takes them: lists (a table,
    ``dims=[96, 192]``) become tuples, the language's lists."""

    def frozen(v: Any) -> Any:
        return tuple(map(frozen, v)) if isinstance(v, (list, tuple)) else v

    return tuple(sorted((k, frozen(v)) for k, v in args.items()))


@contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector while parsing or expanding: both allocate many
    objects that live on and make few cycles, and the collector's repeated passes over them
    made large specs grow faster than linearly (10,000 layers: ~40% of the time)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


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
            # only specs are read: a regular '.dl' file (also where a link leads) of at most 1 MiB, so
            # no device blocks or floods, and no other file's text shows in a message (dlspec.bounds)
            if Path(item.path).suffix != ".dl":
                diags.append(Diagnostic(f"cannot import '{item.path}': an imported spec's name must end in '.dl'", item.span))
                continue
            shown = str(Path(item.path) if not Path(item.path).is_absolute() else target)
            try:
                data = read_bytes(target)
            except SourceProblem as e:
                diags.append(Diagnostic(f"cannot import '{item.path}': {e.message}", item.span))
                continue
            if target.suffix != ".dl":
                why = f"it leads to '{target}', whose name does not end in '.dl'"
                diags.append(Diagnostic(f"cannot import '{item.path}': {why}", item.span))
                continue
            try:
                sub = parse(decode(data, shown), shown)  # not UTF-8: a ParseError at the byte, noted below
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
