"""The registry: names registered where they are defined, one-line errors for unknown ones."""

from __future__ import annotations

import pytest

from util.errors import UserError
from util.registry import Registry


def test_a_registered_class_is_found_by_its_name_in_registration_order():
    archs = Registry("arch")

    @archs.register("psp")
    class PSP:
        pass

    archs.register("aspp")(int)
    assert archs.get("psp") is PSP
    assert archs.names() == ["psp", "aspp"]
    assert "aspp" in archs and "deeplab" not in archs
    assert len(archs) == 2


def test_an_unknown_name_is_one_line_with_the_choices_and_the_closest():
    archs = Registry("arch")
    archs.register("psp")(object)
    with pytest.raises(UserError, match=r"^config 'x.yaml': arch must be one of \['psp'\], got 'pps'; did you mean"):
        archs.get("pps", "config 'x.yaml'")


def test_a_name_registered_twice_is_a_programming_error():
    archs = Registry("arch")
    archs.register("psp")(object)
    with pytest.raises(ValueError, match="registered twice"):
        archs.register("psp")(int)
