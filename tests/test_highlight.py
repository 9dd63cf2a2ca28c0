"""The Pygments lexer and the TextMate grammar for ``.dl`` files."""

from __future__ import annotations

import json
import re
from importlib.metadata import entry_points

from conftest import ROOT
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.token import Error, Keyword, Name, Number, String

from dlspec.highlight import KEYWORDS, OP_WORDS, DlspecLexer, textmate_grammar
from dlspec.ops import USER_OPS

SPECS = sorted((ROOT / "specs").glob("*.dl"))


def test_keywords_are_the_grammars():
    # every quoted word in the grammar is a keyword or a constant of the lexer, and no more
    text = (ROOT / "grammar" / "dlspec.lark").read_text(encoding="utf-8")
    quoted = {w for w in re.findall(r'"([a-z]+)"', text)}
    assert quoted == set(KEYWORDS) | {"true", "false"}


def test_ops_come_from_the_catalogue():
    assert set(OP_WORDS) == set(USER_OPS)


def test_registered_through_the_entry_point():
    names = {ep.name: ep.value for ep in entry_points(group="pygments.lexers")}
    assert names.get("dlspec") == "dlspec.highlight:DlspecLexer"
    assert isinstance(get_lexer_by_name("dl"), DlspecLexer)
    assert isinstance(get_lexer_for_filename("resnet.dl"), DlspecLexer)


def test_tokens_of_a_line():
    text = 'block Stem(c = 64) {\n  conv c kernel 7 stride 2 padding 3 -> relu  # stem\n}\nimport "lib.dl"\n'
    toks = [(t, v) for t, v in DlspecLexer().get_tokens(text) if v.strip()]
    want = [
        (Keyword.Declaration, "block"),
        (Name.Class, "Stem"),
        (Name.Builtin, "conv"),
        (Name.Attribute, "kernel"),
        (Number.Integer, "7"),
        (Name.Builtin, "relu"),
        (String.Double, '"lib.dl"'),
    ]
    for w in want:
        assert w in toks, w
    assert (Keyword, "import") in toks


def test_every_spec_lexes_without_errors_and_round_trips():
    for p in SPECS:
        text = p.read_text(encoding="utf-8")
        toks = list(DlspecLexer().get_tokens(text))
        assert not [v for t, v in toks if t is Error], p.name
        assert "".join(v for _, v in toks) == (text if text.endswith("\n") else text + "\n")


def test_textmate_file_is_generated_and_its_patterns_compile():
    on_disk = json.loads((ROOT / "grammar" / "dlspec.tmLanguage.json").read_text(encoding="utf-8"))
    assert on_disk == textmate_grammar(), "regenerate: python -m dlspec.highlight > grammar/dlspec.tmLanguage.json"
    assert on_disk["scopeName"] == "source.dlspec"

    def patterns(ps):
        for p in ps:
            yield from (p[k] for k in ("match", "begin", "end") if k in p)
            yield from patterns(p.get("patterns", []))

    found = list(patterns(on_disk["patterns"]))
    assert len(found) >= 12
    for rx in found:
        re.compile(rx)  # the subset used is common to Python's re and Oniguruma
    op = next(p["match"] for p in on_disk["patterns"] if p.get("name") == "support.function.op.dlspec")
    assert re.search(op, "x -> batchnorm ->") and not re.search(op, "Block(conv(")
