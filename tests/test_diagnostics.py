"""Every diagnostic kind, by its exact rendered text: message, line:col, source line,
caret, notes and help (``dlspec.errors.render``, no colour)."""

from __future__ import annotations

import json

import pytest
from conftest import diagnostics, run_dlspec

# (source, expected rendering)
CASES = {
    "unclosed_brace": (
        "model M {\n  input x: [3]\n  dense 10\n",
        "t.dl:1:9: error: '{' is never closed\n  |\n1 | model M {\n  |         ^\nt.dl:3:11: note: the file ends here\nhelp: add '}' to close it",
    ),
    "unmatched_brace": (
        "model M {\n  input x: [3]\n}\n}\n",
        "t.dl:4:1: error: unmatched '}'\n  |\n4 | }\n  | ^\nhelp: remove it, or add the '{' it should close",
    ),
    "symbolic_size_as_value": (
        "model M {\n  input x: [T, 32]\n  reshape [T, 4, 8]\n}\n",
        "t.dl:3:12: error: 'T' is a symbolic size of input 'x', known only at run time, not a value\n  |\n3 |   reshape [T, 4, 8]\n"
        "  |            ^\nhelp: in 'reshape', write -1 for the one size to infer: 'reshape [-1, 4, 8]'",
    ),
    "stray_comma": (
        "model M {\n  input x: [3]\n  dense 10,\n}\n",
        "t.dl:3:11: error: stray ',' at the end of the arguments\n  |\n3 |   dense 10,\n  |           ^\nhelp: remove the ','",
    ),
    "arrow_nothing_after": (
        "model M {\n  input x: [3]\n  dense 10 ->\n}\n",
        "t.dl:3:13: error: '->' must be followed by a layer\n  |\n3 |   dense 10 ->\n  |             ^",
    ),
    "unmatched_paren": (
        "model M {\n  input x: [3] )\n}\n",
        "t.dl:2:16: error: unmatched ')'\n  |\n2 |   input x: [3] )\n  |                ^",
    ),
    "unclosed_bracket": (
        "model M {\n  input x: [3, 4\n}\n",
        "t.dl:2:12: error: '[' is never closed\n  |\n2 |   input x: [3, 4\n  |            ^\nt.dl:3:1: note: '}' comes before it is closed\nhelp: add ']' to close it",
    ),
    "unexpected_token": (
        "model M {\n  input x: [3]\n  dense 10 20 = 4\n}\n",
        "t.dl:3:15: error: unexpected '='\n  |\n3 |   dense 10 20 = 4\n  |               ^\nhelp: a tensor name goes first: 'name = layer …'; inside a call write 'key = value'",
    ),
    "two_statements_one_line": (
        "model M {\n  input x: [3]\n  y = x 3\n}\n",
        "t.dl:3:7: error: 'x' is a tensor, not a layer; did you forget '->' after it?\n  |\n3 |   y = x 3\n  |       ^",
    ),
    "unexpected_equal": (
        "model M {\n  input x: [3]\n  = dense 3\n}\n",
        "t.dl:3:3: error: unexpected '='\n  |\n3 |   = dense 3\n  |   ^\nhelp: a tensor name goes first: 'name = layer …'; inside a call write 'key = value'",
    ),
    "model_without_name": (
        "model {\n  input x: [3]\n}\n",
        "t.dl:1:7: error: unexpected '{'; expected a call or a name\n  |\n1 | model {\n  |       ^",
    ),
    "unterminated_string": (
        'import "other.dl\n',
        't.dl:1:8: error: unterminated string\n  |\n1 | import "other.dl\n  |        ^\nhelp: close the string with " on the same line',
    ),
    "bad_character": (
        "model M {\n  input x: [3] $\n}\n",
        "t.dl:2:16: error: unexpected character '$'\n  |\n2 |   input x: [3] $\n  |                ^",
    ),
    "bad_escape": (
        'train M {\n  data "a\\qb"\n}\n',
        't.dl:2:10: error: unknown escape \'\\q\' in a string\n  |\n2 |   data "a\\qb"\n  |          ^~\nhelp: escapes are \\" \\\\ \\n \\t \\r \\b \\f \\uXXXX',
    ),
    "missing_arrow": (
        "model M {\n  input x: [3]\n  dense 10 relu\n}\n",
        "t.dl:3:12: error: 'relu' is not a parameter of dense; did you forget '->' before it?\n  |\n3 |   dense 10 relu\n  |            ^~~~\nhelp: write 'dense … -> relu'",
    ),
    "unknown_key": (
        "model M {\n  input x: [3, 8, 8]\n  conv 6 kernal 3\n}\n",
        "t.dl:3:10: error: unknown parameter 'kernal' for conv — did you mean 'kernel'?\n  |\n3 |   conv 6 kernal 3\n  |          ^~~~~~",
    ),
    "unknown_op": (
        "model M {\n  input x: [3]\n  dens 10\n}\n",
        "t.dl:3:3: error: unknown op 'dens' — did you mean 'dense'?\n  |\n3 |   dens 10\n  |   ^~~~",
    ),
    "unknown_name": (
        "model M(width = 4) {\n  input x: [3]\n  dense widht\n}\n",
        "t.dl:3:9: error: unknown name 'widht' — did you mean 'width'?\n  |\n3 |   dense widht\n  |         ^~~~~",
    ),
    "unknown_block": (
        "block Basic(c) { dense c }\nmodel M {\n  input x: [3]\n  Basik(3)\n}\n",
        "t.dl:4:3: error: unknown block or function 'Basik' — did you mean 'Basic'?\n  |\n4 |   Basik(3)\n  |   ^~~~~",
    ),
    "unknown_block_param": (
        "block Basic(c, stride = 1) { dense c }\nmodel M {\n  input x: [3]\n  Basic(4, strid = 2)\n}\n",
        "t.dl:4:12: error: block 'Basic' has no parameter 'strid' — did you mean 'stride'?\n  |\n4 |   Basic(4, strid = 2)\n  |            ^~~~~~~~~\nt.dl:1:7: note: 'Basic' is defined here",
    ),
    "missing_block_arg": (
        "block Basic(c, stride = 1) { dense c }\nmodel M {\n  input x: [3]\n  Basic(stride = 2)\n}\n",
        "t.dl:4:3: error: block 'Basic' needs a value for 'c'\n  |\n4 |   Basic(stride = 2)\n  |   ^~~~~~~~~~~~~~~~~\nt.dl:1:7: note: 'Basic' is defined here",
    ),
    "too_many_block_args": (
        "block Basic(c) { dense c }\nmodel M {\n  input x: [3]\n  Basic(1, 2)\n}\n",
        "t.dl:4:3: error: block 'Basic' takes 1 argument, got 2\n  |\n4 |   Basic(1, 2)\n  |   ^~~~~~~~~~~\nt.dl:1:7: note: 'Basic' is defined here",
    ),
    "key_without_value": (
        "model M {\n  input x: [3, 8, 8]\n  conv 6 kernel\n}\n",
        "t.dl:3:10: error: conv 'kernel' needs a value\n  |\n3 |   conv 6 kernel\n  |          ^~~~~~\nhelp: write 'kernel VALUE'",
    ),
    "too_many_positional": (
        "model M {\n  input x: [3]\n  dense 10 20\n}\n",
        "t.dl:3:12: error: dense takes 1 positional argument (units), got one more: 20\n  |\n3 |   dense 10 20\n  |            ^~",
    ),
    "no_positional": (
        "model M {\n  input x: [3]\n  flatten 2\n}\n",
        "t.dl:3:11: error: flatten takes no positional arguments, got 2\n  |\n3 |   flatten 2\n  |           ^\nhelp: name it: 'flatten KEY 2'; keys: start",
    ),
    "negative_kernel": (
        "model M {\n  input x: [3, 8, 8]\n  conv 6 kernel -1\n}\n",
        "t.dl:3:17: error: conv 'kernel' must be > 0, got -1\n  |\n3 |   conv 6 kernel -1\n  |                 ^~",
    ),
    "dropout_rate": (
        "model M {\n  input x: [3]\n  dropout 1.5\n}\n",
        "t.dl:3:11: error: dropout 'rate' must be < 1.0, got 1.5\n  |\n3 |   dropout 1.5\n  |           ^~~",
    ),
    "float_filters": (
        "model M {\n  input x: [3, 8, 8]\n  conv 6.5 kernel 3\n}\n",
        "t.dl:3:8: error: conv 'filters' must be a whole number, got 6.5\n  |\n3 |   conv 6.5 kernel 3\n  |        ^~~",
    ),
    "missing_required": (
        "model M {\n  input x: [3, 8, 8]\n  conv 6\n}\n",
        "t.dl:3:3: error: conv needs 'kernel'\n  |\n3 |   conv 6\n  |   ^~~~~~\nhelp: write it as 'conv … kernel VALUE'",
    ),
    "bad_literal_word": (
        "model M {\n  input x: [3] dtype flot\n}\n",
        "t.dl:2:22: error: input 'dtype' must be one of float32, float16, bfloat16, int32, int64, bool, float, int, long, half, got 'flot' — did you mean 'float'?\n  |\n2 |   input x: [3] dtype flot\n  |                      ^~~~",
    ),
    "key_given_twice": (
        "model M {\n  input x: [3, 8, 8]\n  conv 6 kernel 3 kernel 5\n}\n",
        "t.dl:3:26: error: conv 'kernel' is given twice\n  |\n3 |   conv 6 kernel 3 kernel 5\n  |                          ^\nt.dl:3:17: note: first given here",
    ),
    "duplicate_layer_name": (
        "model M {\n  input x: [3]\n  dense 4 as fc\n  dense 4 as fc\n}\n",
        "t.dl:4:3: error: name 'fc' is already used in this scope\n  |\n4 |   dense 4 as fc\n  |   ^~~~~~~~~~~~~\nt.dl:3:3: note: first used here",
    ),
    "duplicate_definition": (
        "model M {\n  input x: [3]\n}\nmodel M {\n  input y: [3]\n}\n",
        "t.dl:4:7: error: 'M' is defined twice\n  |\n4 | model M {\n  |       ^\nt.dl:1:7: note: first defined here",
    ),
    "duplicate_param": (
        "block B(c, c) { dense c }\n",
        "t.dl:1:12: error: parameter 'c' is declared twice\n  |\n1 | block B(c, c) { dense c }\n  |            ^",
    ),
    "recursion_self": (
        "block Loop(c) {\n  dense c\n  Loop(c)\n}\nmodel M {\n  input x: [3]\n  Loop(2)\n}\n",
        "t.dl:3:3: error: block 'Loop' calls itself (Loop → Loop)\n  |\n3 |   Loop(c)\n  |   ^~~~~~~\nt.dl:7:3: note: in block 'Loop' called at t.dl:7:3\nhelp: recursion is not allowed; use 'repeat' for repeated structure",
    ),
    "recursion_mutual": (
        "block A { B() }\nblock B { A() }\nmodel M {\n  input x: [3]\n  A()\n}\n",
        "t.dl:2:11: error: block 'A' calls itself (A → B → A)\n  |\n2 | block B { A() }\n  |           ^~~\nt.dl:1:11: note: in block 'B' called at t.dl:1:11\nt.dl:5:3: note: in block 'A' called at t.dl:5:3\nhelp: recursion is not allowed; use 'repeat' for repeated structure",
    ),
    "gate_outside_cell": (
        "model M {\n  input x: [3]\n  gate g = dense 3\n}\n",
        "t.dl:3:3: error: 'gate' is only meaningful inside a cell\n  |\n3 |   gate g = dense 3\n  |   ^~~~~~~~~~~~~~~~\nhelp: remove 'gate', or move this into a 'cell'",
    ),
    "state_never_updated": (
        "cell C(h) {\n  state s: [h]\n  y = dense h\n}\nmodel M {\n  input x: [T, 3]\n  C(4)\n}\n",
        "t.dl:2:3: error: state 's' of cell 'C' is never updated\n  |\n2 |   state s: [h]\n  |   ^~~~~~~~~~~~\nhelp: assign it: 's = …'",
    ),
    "state_outside_cell": (
        "model M {\n  input x: [3]\n  state h: [3]\n}\n",
        "t.dl:3:3: error: 'state' is only allowed in a cell\n  |\n3 |   state h: [3]\n  |   ^~~~~~~~~~~~",
    ),
    "cell_without_state": (
        "cell C(h) {\n  dense h\n}\nmodel M {\n  input x: [T, 3]\n  C(4)\n}\n",
        "t.dl:1:6: error: cell 'C' declares no state\n  |\n1 | cell C(h) {\n  |      ^\nhelp: add one: 'state h: [hidden]'",
    ),
    "model_without_input": (
        "model M {\n  dense 3\n}\n",
        "t.dl:2:3: error: 'dense' has no input: nothing comes before it\n  |\n2 |   dense 3\n  |   ^~~~~~~\nhelp: declare an input first: 'input x: [1, 28, 28]'",
    ),
    "branch_outside_merge": (
        "model M {\n  input x: [3]\n  branch { dense 3 }\n}\n",
        "t.dl:3:3: error: 'branch' must follow 'concat', 'add' or 'multiply'\n  |\n3 |   branch { dense 3 }\n  |   ^~~~~~",
    ),
    "when_on_repeat": (
        "model M {\n  input x: [3]\n  repeat 2 when true { dense 3 }\n}\n",
        "t.dl:3:17: error: 'when' applies only to 'shortcut', not to 'repeat'\n  |\n3 |   repeat 2 when true { dense 3 }\n  |                 ^~~~\nhelp: for a conditional write 'if COND { … }'",
    ),
    "unknown_output": (
        "model M {\n  input x: [3]\n  h = dense 3\n  output hh\n}\n",
        "t.dl:4:10: error: unknown tensor 'hh' — did you mean 'h'?\n  |\n4 |   output hh\n  |          ^~",
    ),
    "tensor_not_layer": (
        "model M {\n  input x: [3]\n  h = x -> dense 3\n  h -> x\n}\n",
        "t.dl:4:8: error: 'x' is a tensor, not a layer; it cannot follow '->'\n  |\n4 |   h -> x\n  |        ^\nhelp: to combine tensors use arithmetic or 'concat(a, b)'",
    ),
    "division_by_zero": (
        "model M(n = 0) {\n  input x: [3]\n  dense (4 // n)\n}\n",
        "t.dl:3:10: error: division by zero\n  |\n3 |   dense (4 // n)\n  |          ^~~~~~",
    ),
    "condition_not_bool": (
        "model M(n = 2) {\n  input x: [3]\n  if n { dense 3 }\n}\n",
        "t.dl:3:6: error: a condition must be true or false, got 2\n  |\n3 |   if n { dense 3 }\n  |      ^",
    ),
    "repeat_negative": (
        "model M {\n  input x: [3]\n  repeat -1 { dense 3 }\n}\n",
        "t.dl:3:10: error: repeat count must be a whole number ≥ 0, got -1\n  |\n3 |   repeat -1 { dense 3 }\n  |          ^~",
    ),
    "train_unknown_setting": (
        "model M {\n  input x: [3]\n}\ntrain M {\n  dat mnist\n}\n",
        "t.dl:5:3: error: unknown train setting 'dat' — did you mean 'data'?\n  |\n5 |   dat mnist\n  |   ^~~\nhelp: settings: data, loss, optimizer, schedule, weight_decay, l2, clip, batch, epochs, steps, seed, metrics, device, devices, sync_bn, noise, latent, label_smoothing, env, gamma, buffer, target_update, epsilon, episodes, warmup, beta, d_optimizer, g_optimizer",
    ),
    "train_unknown_optimizer_option": (
        "model M {\n  input x: [3]\n}\ntrain M {\n  optimizer sgd lr 0.1 momentun 0.9\n}\n",
        "t.dl:5:24: error: unknown option 'momentun' for optimizer sgd — did you mean 'momentum'?\n  |\n5 |   optimizer sgd lr 0.1 momentun 0.9\n  |                        ^~~~~~~~\nhelp: options: lr, momentum, nesterov, weight_decay",
    ),
    "train_option_for_other_optimizer": (
        "model M {\n  input x: [3]\n}\ntrain M {\n  optimizer sgd beta1 0.9\n}\n",
        "t.dl:5:17: error: unknown option 'beta1' for optimizer sgd\n  |\n5 |   optimizer sgd beta1 0.9\n  |                 ^~~~~\nhelp: options: lr, momentum, nesterov, weight_decay",
    ),
    "train_option_for_other_loss": (
        "model M {\n  input x: [3]\n}\ntrain M {\n  loss cross_entropy delta 2\n}\n",
        "t.dl:5:22: error: unknown option 'delta' for loss cross_entropy\n  |\n5 |   loss cross_entropy delta 2\n  |                      ^~~~~\n"
        "help: options: label_smoothing",
    ),
    "train_loss_without_options": (
        "model M {\n  input x: [3]\n}\ntrain M {\n  loss mse label_smoothing 0.1\n}\n",
        "t.dl:5:12: error: unknown option 'label_smoothing' for loss mse\n  |\n5 |   loss mse label_smoothing 0.1\n  |            ^~~~~~~~~~~~~~~\n"
        "help: loss mse takes no options; a GAN's label smoothing is a setting of its own: 'label_smoothing 0.1'",
    ),
    "train_unknown_optimizer": (
        "model M {\n  input x: [3]\n}\ntrain M {\n  optimizer adamm lr 0.1\n}\n",
        "t.dl:5:13: error: unknown optimizer 'adamm' — did you mean 'adam'?\n  |\n5 |   optimizer adamm lr 0.1\n  |             ^~~~~\nhelp: one of sgd, rmsprop, adagrad, ftrl, adam, adamw",
    ),
    "train_bad_values": (
        "model M {\n  input x: [3]\n}\ntrain M {\n  batch -3\n  epochs 2.5\n  optimizer sgd nesterov 1\n  seed yes\n}\n",
        "t.dl:5:9: error: 'batch' must be positive, got -3\n  |\n5 |   batch -3\n  |         ^~\nt.dl:6:10: error: 'epochs' must be a whole number, got 2.5\n  |\n6 |   epochs 2.5\n  |          ^~~\nt.dl:7:26: error: 'nesterov' must be true or false, got 1\n  |\n7 |   optimizer sgd nesterov 1\n  |                          ^\nt.dl:8:8: error: 'seed' must be a number, got 'yes'\n  |\n8 |   seed yes\n  |        ^~~",
    ),
    "train_unknown_model": (
        "model Net {\n  input x: [3]\n}\ntrain Nett {\n  batch 2\n}\n",
        "t.dl:4:7: error: unknown model 'Nett' — did you mean 'Net'?\n  |\n4 | train Nett {\n  |       ^~~~",
    ),
    "train_set_twice": (
        "model M {\n  input x: [3]\n}\ntrain M {\n  batch 2\n  batch 4\n}\n",
        "t.dl:6:3: error: 'batch' is set twice\n  |\n6 |   batch 4\n  |   ^~~~~~~\nt.dl:5:3: note: first set here",
    ),
    "train_unknown_metric": (
        "model M {\n  input x: [3]\n}\ntrain M {\n  metrics accuracy, top6\n}\n",
        "t.dl:5:21: error: unknown metric 'top6' — did you mean 'top5'?\n  |\n5 |   metrics accuracy, top6\n  |                     ^~~~\nhelp: one of accuracy, top5, loss",
    ),
    "train_gan_roles": (
        "model G {\n  input x: [3]\n}\ntrain gan generator G, discriminatr G {\n  batch 2\n}\n",
        "t.dl:4:24: error: 'train gan' names generator, discriminator; got 'discriminatr' — did you mean 'discriminator'?\n  |\n4 | train gan generator G, discriminatr G {\n  |                        ^~~~~~~~~~~~",
    ),
    "train_no_model": (
        "train {\n  batch 2\n}\n",
        "t.dl:1:1: error: 'train' needs the model to train: 'train LeNet5 { … }'\n  |\n1 | train {\n  | ^~~~~~~",
    ),
    "train_bad_value_name": (
        "model M {\n  input x: [3]\n}\ntrain M {\n  optimizer sgd lr relu\n}\n",
        "t.dl:5:20: error: 'lr' must be a number, got 'relu'\n  |\n5 |   optimizer sgd lr relu\n  |                    ^~~~",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_diagnostic_text(name):
    source, expected = CASES[name]
    assert diagnostics(source) == expected


def test_independent_errors_are_all_reported_in_one_run():
    source = (
        "block B(c, stride = 1) { dense c }\n"
        "model M {\n"
        "  input x: [3]\n"
        "  B(4, strid = 2)\n"
        "  B()\n"
        "  dens 3\n"
        "  conv 6 kernal 3\n"
        "}\n"
        "model N {\n"
        "  input y: [3]\n"
        "  dropout 1.5\n"
        "}\n"
        "train M {\n"
        "  batch 0\n"
        "  dat x\n"
        "}\n"
    )
    text = diagnostics(source)
    heads = [line for line in text.splitlines() if ": error: " in line]
    assert heads == [
        "t.dl:4:8: error: block 'B' has no parameter 'strid' — did you mean 'stride'?",
        "t.dl:5:3: error: block 'B' needs a value for 'c'",
        "t.dl:6:3: error: unknown op 'dens' — did you mean 'dense'?",
        "t.dl:7:10: error: unknown parameter 'kernal' for conv — did you mean 'kernel'?",
        "t.dl:11:11: error: dropout 'rate' must be < 1.0, got 1.5",
        "t.dl:14:9: error: 'batch' must be positive, got 0",
        "t.dl:15:3: error: unknown train setting 'dat' — did you mean 'data'?",
    ]


def test_error_inside_a_block_has_a_call_backtrace():
    source = "block Inner(c) {\n  dense c kernal 3\n}\nblock Outer {\n  Inner(4)\n}\nmodel M {\n  input x: [3]\n  Outer()\n}\n"
    assert diagnostics(source) == (
        "t.dl:2:11: error: unknown parameter 'kernal' for dense\n"
        "  |\n"
        "2 |   dense c kernal 3\n"
        "  |           ^~~~~~\n"
        "t.dl:5:3: note: in block 'Inner' called at t.dl:5:3\n"
        "t.dl:9:3: note: in block 'Outer' called at t.dl:9:3"
    )


def test_missing_import_and_import_cycle(write):
    write("a.dl", 'import "b.dl"\nmodel M {\n  input x: [3]\n}\n')
    write("b.dl", 'import "a.dl"\nblock B { dense 2 }\n')
    main = write("main.dl", '# uses gone.dl\nimport "gone.dl"\nmodel Top {\n  input x: [3]\n}\n')
    r = run_dlspec("check", str(main), cwd=main.parent)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == (
        f"{main}:2:1: error: cannot import 'gone.dl': no such file\n  |\n2 | import \"gone.dl\"\n  | ^~~~~~~~~~~~~~~~\n{main}: 1 error\n"
    )
    r = run_dlspec("check", "a.dl", cwd=main.parent)
    assert r.returncode == 1
    assert r.stderr == (
        "b.dl:1:1: error: import cycle: 'a.dl' imports this file again\n"
        "  |\n"
        '1 | import "a.dl"\n'
        "  | ^~~~~~~~~~~~~\n"
        "a.dl:1:1: note: imported from a.dl:1:1\n"
        "a.dl: 1 error\n"
    )


def test_syntax_error_in_an_imported_file_names_the_import(write):
    write("lib.dl", "block B {\n  dense 2,\n}\n")
    main = write("main.dl", 'import "lib.dl"\nmodel M {\n  input x: [3]\n}\n')
    r = run_dlspec("check", "main.dl", cwd=main.parent)
    assert r.returncode == 1
    assert r.stderr == (
        "lib.dl:2:10: error: stray ',' at the end of the arguments\n"
        "  |\n"
        "2 |   dense 2,\n"
        "  |          ^\n"
        "main.dl:1:1: note: imported from main.dl:1:1\n"
        "help: remove the ','\n"
        "main.dl: 1 error\n"
    )


def test_check_json_format(write):
    p = write("bad.dl", "model M {\n  input x: [3]\n  x -> dens 10\n  x -> dense 4 as fc\n  x -> dense 4 as fc\n}\n")
    r = run_dlspec("check", "--json", "bad.dl", cwd=p.parent)
    assert r.returncode == 1
    assert r.stderr == ""
    assert json.loads(r.stdout) == [
        {
            "file": "bad.dl",
            "line": 3,
            "col": 8,
            "end_line": 3,
            "end_col": 12,
            "severity": "error",
            "message": "unknown op 'dens' — did you mean 'dense'?",
            "notes": [],
        },
        {
            "file": "bad.dl",
            "line": 5,
            "col": 8,
            "end_line": 5,
            "end_col": 21,
            "severity": "error",
            "message": "name 'fc' is already used in this scope",
            "notes": [{"message": "first used here", "file": "bad.dl", "line": 4, "col": 8}],
        },
    ]


def test_check_json_is_an_empty_list_when_all_is_well(write):
    p = write("ok.dl", "model M {\n  input x: [3]\n  dense 2\n}\n")
    r = run_dlspec("check", "--json", "ok.dl", cwd=p.parent)
    assert (r.returncode, json.loads(r.stdout), r.stderr) == (0, [], "")


def test_check_json_includes_help(write):
    p = write("bad.dl", "model M {\n  input x: [3]\n  dense 10 relu\n}\n")
    r = run_dlspec("check", "--json", "bad.dl", cwd=p.parent)
    (d,) = json.loads(r.stdout)
    assert d["help"] == "write 'dense … -> relu'"
    assert (d["line"], d["col"], d["end_line"], d["end_col"]) == (3, 12, 3, 16)
