"""Syntax highlighting for ``.dl`` specs: a Pygments lexer.

Registered as the Pygments lexer ``dlspec`` (aliases ``dl``, ``dlspec``; files ``*.dl``)
through the ``pygments.lexers`` entry point, so ``pygmentize -l dlspec spec.dl``, Sphinx and
MkDocs code blocks tagged ``dl`` highlight specs. Its word lists come from the places that
define the language (the grammar's keywords, the op catalogue, the train settings), so a new
op or setting is highlighted without touching this file.
"""

from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

#: the grammar's own keywords (``grammar/dlspec.lark``'s quoted words; a test checks the two agree)
KEYWORDS = (
    "model",
    "block",
    "cell",
    "train",
    "import",
    "input",
    "param",
    "output",
    "state",
    "gate",
    "if",
    "elif",
    "else",
    "when",
    "and",
    "or",
    "not",
)
CONSTANTS = ("true", "false")


def _lists() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(structural words, op words, op keys, train-section words), from their registries."""
    from .expand import STRUCTURAL
    from .ops import CATALOGUE, USER_OPS
    from .trainspec import KINDS, SETTINGS

    ops = tuple(USER_OPS)
    keys: set[str] = set()
    for name in ops:
        op = CATALOGUE[name]
        keys.update(f for f in op.Params.model_fields if f != "op")
        keys.update(op.key_aliases)
    train: set[str] = set(SETTINGS) | set(KINDS)
    for _typ, values, options in SETTINGS.values():
        train.update(options)
        train.update(values or ())
    for roles in KINDS.values():
        train.update(roles)
    keys -= set(ops) | set(STRUCTURAL)
    train -= set(ops) | set(STRUCTURAL) | keys
    return tuple(sorted(STRUCTURAL)), ops, tuple(sorted(keys)), tuple(sorted(train))


STRUCTURE_WORDS, OP_WORDS, KEY_WORDS, TRAIN_WORDS = _lists()


class DlspecLexer(RegexLexer):
    """Pygments lexer for dlspec model specs (``.dl``)."""

    name = "dlspec"
    aliases = ["dlspec", "dl"]
    filenames = ["*.dl"]
    mimetypes = ["text/x-dlspec"]

    tokens = {
        "root": [
            (r"[ \t\f\r]+", Whitespace),
            (r"\n", Whitespace),
            (r"#.*$", Comment.Single),
            (r'"(?:[^"\\\n]|\\.)*"', String.Double),
            # a definition: `model LeNet5 {`, `block Bottleneck(planes, stride = 1) {`
            (r"\b(model|block|cell)(\s+)([A-Za-z_]\w*)", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (words(KEYWORDS, prefix=r"\b", suffix=r"\b"), Keyword),
            (words(CONSTANTS, prefix=r"\b", suffix=r"\b"), Keyword.Constant),
            (words(STRUCTURE_WORDS, prefix=r"\b", suffix=r"\b"), Keyword.Reserved),
            (words(OP_WORDS, prefix=r"\b", suffix=r"\b(?!\()"), Name.Builtin),
            (words(KEY_WORDS, prefix=r"\b", suffix=r"\b(?!\()"), Name.Attribute),
            (words(TRAIN_WORDS, prefix=r"\b", suffix=r"\b(?!\()"), Name.Property),
            # a block or function call: `Bottleneck(64)`, `max(a, b)`
            (r"[A-Za-z_]\w*(?=\()", Name.Function),
            (r"[A-Z]\w*", Name.Class),
            (r"[A-Za-z_]\w*", Name.Variable),
            (r"(?:\d+\.\d*|\.\d+|\d+)[eE][+-]?\d+|\d+\.\d*|\.\d+", Number.Float),
            (r"\d+", Number.Integer),
            (r"->", Operator),
            (r"\*\*|//|==|!=|<=|>=|[-+*/%<>=@]", Operator),
            (r"\.\.\.|[{}()\[\],:;]", Punctuation),
            (r".", Text),
        ]
    }


def _alt(ws: tuple[str, ...]) -> str:
    return r"\b(?:" + "|".join(sorted(ws, key=lambda w: (-len(w), w))) + r")\b(?!\()"


def textmate_grammar() -> dict:
    """The TextMate grammar for ``.dl`` files (VS Code, Sublime Text, Zed, GitHub's linguist …),
    from the same word lists as :class:`DlspecLexer`; ``grammar/dlspec.tmLanguage.json`` is this,
    written out (a test checks they agree)."""
    return {
        "$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/tmlanguage.json",
        "name": "dlspec",
        "scopeName": "source.dlspec",
        "fileTypes": ["dl"],
        "patterns": [
            {"name": "comment.line.number-sign.dlspec", "match": "#.*$"},
            {
                "name": "string.quoted.double.dlspec",
                "begin": '"',
                "end": '"|$',
                "patterns": [{"name": "constant.character.escape.dlspec", "match": r"\\."}],
            },
            {
                "match": r"\b(model|block|cell)\s+([A-Za-z_]\w*)",
                "captures": {"1": {"name": "storage.type.dlspec"}, "2": {"name": "entity.name.type.dlspec"}},
            },
            {"name": "keyword.control.dlspec", "match": _alt(KEYWORDS)},
            {"name": "constant.language.dlspec", "match": _alt(CONSTANTS)},
            {"name": "keyword.other.structure.dlspec", "match": _alt(STRUCTURE_WORDS)},
            {"name": "support.function.op.dlspec", "match": _alt(OP_WORDS)},
            {"name": "variable.parameter.key.dlspec", "match": _alt(KEY_WORDS)},
            {"name": "support.constant.train.dlspec", "match": _alt(TRAIN_WORDS)},
            {"name": "entity.name.function.call.dlspec", "match": r"\b[A-Za-z_]\w*(?=\()"},
            {"name": "constant.numeric.dlspec", "match": r"\b(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?\b"},
            {"name": "keyword.operator.arrow.dlspec", "match": "->"},
            {"name": "keyword.operator.dlspec", "match": r"\*\*|//|==|!=|<=|>=|[-+*/%<>=@]"},
        ],
    }


if __name__ == "__main__":  # python -m dlspec.highlight > grammar/dlspec.tmLanguage.json
    import json

    print(json.dumps(textmate_grammar(), indent=2))
