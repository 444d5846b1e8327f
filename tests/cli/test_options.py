"""The prune, correct and circuit options are generated from their configs' fields."""

import argparse

import pytest

from excise.circuits.config import CircuitConfig
from excise.cli import circuit, correct, prune
from excise.cli.main import build_parser
from excise.cli.options import COMPUTE_OPTIONS, field_info
from excise.correction.config import CorrectConfig
from excise.pruning.config import PruneConfig

COMMANDS = {"prune": (prune, PruneConfig), "correct": (correct, CorrectConfig), "circuit": (circuit, CircuitConfig)}
REQUIRED = {"prune": ["--sparsity", "0.5", "--method", "lrp"], "correct": ["--behaviour", "toxicity"], "circuit": []}


def actions(command: str) -> dict[str, argparse.Action]:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest: action for action in subparsers.choices[command]._actions}


def parse(command: str, *args: str):
    module, _ = COMMANDS[command]
    return module.make_config(build_parser().parse_args([command, *REQUIRED[command], *args, "--out", "x"]))


@pytest.mark.parametrize("command", COMMANDS)
def test_defaults_and_help_come_from_the_config_fields(command):
    module, config = COMMANDS[command]
    parsed = actions(command)
    for option in module.OPTIONS:
        info, action = field_info(config, option.field), parsed[option.dest]
        assert (option.help or info.description) in action.help.replace("%%", "%"), option.field
        if action.required:
            continue
        if isinstance(action, argparse._AppendAction) or option.default is None:
            assert action.default is None, option.field  # KEY=VALUE pairs ({} if none); budget, sweep: the command's
        else:
            assert action.default == info.get_default(call_default_factory=True), option.field


def test_the_defaults_on_the_command_line_are_the_configs():
    made = parse("prune")  # calibration and evaluation: specs the command builds from SOURCE:COUNTxLENGTH
    assert made == PruneConfig(method="lrp", sparsity=0.5, calibration=made.calibration, evaluation=made.evaluation)
    assert made.calibration.count == 64 and made.calibration.length == 512
    assert parse("correct") == CorrectConfig(behaviour="toxicity")
    assert parse("circuit") == CircuitConfig()


def test_every_command_has_the_same_compute_flags():
    seen = {}
    for command in COMMANDS:
        parsed = actions(command)
        seen[command] = [(tuple(parsed[o.dest].option_strings), parsed[o.dest].default, parsed[o.dest].help,
                          parsed[o.dest].choices) for o in COMPUTE_OPTIONS]
    assert seen["prune"] == seen["correct"] == seen["circuit"]
    assert seen["prune"][1][3] == ["float32", "bfloat16", "float16"]  # dtype: the Literal's choices


@pytest.mark.parametrize(("command", "flag", "value"), [("prune", "--selection", "neuron"), ("correct", "--unit", "head"),
                                                       ("circuit", "--unit", "neuron")])
def test_granularity_is_kept_as_an_alias(command, flag, value):
    assert parse(command, flag, value).granularity == parse(command, "--granularity", value).granularity == value
    assert "--granularity: the same, an older name" in actions(command)["granularity"].help


def test_nested_fields_key_value_pairs_and_the_budget_without_a_sweep():
    made = parse("correct", "--samples", "3", "--seed", "5", "--param", "aggregation=signed", "--param", "x=1")
    assert made.settings.samples == 3 and made.settings.seed == 5 and made.params == {"aggregation": "signed", "x": 1}
    assert made.sweep == [10, 15, 25, 50, 100] and parse("correct", "--budget", "7").budgets() == [7]
    assert parse("correct", "--budget", "7", "--sweep", "3,1").budgets() == [1, 3]
    pruned = parse("prune", "--reconstruct", "--reconstruct-param", "damping=0.1", "--selection-param", "m=8")
    assert pruned.reconstruction.damping == 0.1 and pruned.selection_params == {"m": 8}
    assert parse("circuit", "--refine", "1", "--sparsities", "0.5,0.25").sparsities == [0.25, 0.5]
