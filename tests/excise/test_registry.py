import argparse

import pytest
from pydantic import BaseModel, ValidationError

from excise.errors import ExciseError
from excise.registry import Registry


@pytest.fixture
def colours() -> Registry[int]:
    registry = Registry("colour")
    for value, name in enumerate(("red", "green", "blue")):
        registry.add(name, value)
    return registry


def test_entries_keep_their_order_and_refuse_a_second_registration(colours):
    assert colours.names() == ["red", "green", "blue"] and colours["green"] == 1 and len(colours) == 3
    with pytest.raises(ValueError, match=r"colour 'red' is already registered \(0\)"):
        colours.add("red", 7)
    assert colours["red"] == 0


def test_an_unknown_name_is_one_line_listing_the_choices(colours):
    with pytest.raises(ExciseError) as error:
        colours["mauve"]
    assert str(error.value) == "unknown colour 'mauve'; choose one of: red, green, blue"
    assert colours.get("mauve") is None and colours.get(None) is None


def test_custom_messages():
    registry = Registry("model type", unknown="{name!r} is not supported; supported: {choices}",
                        duplicate="{name!r} already has {existing}")
    registry.add("llama", int)
    with pytest.raises(ExciseError, match="'opt' is not supported; supported: llama"):
        registry["opt"]
    with pytest.raises(ValueError, match="'llama' already has int"):
        registry.add("llama", float)


def test_argparse_choices(colours):
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--colour", choices=colours)
    assert parser.parse_args(["--colour", "blue"]).colour == "blue"
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        parser.parse_args(["--colour", "mauve"])


def test_pydantic_field(colours):
    class Paint(BaseModel):
        colour: colours.choice() = "red"

    assert Paint(colour="green").colour == "green"
    with pytest.raises(ValidationError, match="unknown colour 'mauve'; choose one of: red, green, blue"):
        Paint(colour="mauve")
    colours.add("mauve", 3)  # checked against the registry as it is when the config is made
    assert Paint(colour="mauve").colour == "mauve"
