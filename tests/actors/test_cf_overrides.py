"""--set values typed by the CF config dataclass's fields."""

from __future__ import annotations

import pytest

from actors.cf.overrides import OverrideError, parse_overrides


def test_values_take_the_field_types():
    got = parse_overrides(["sasrec.epochs=20", "sasrec.dropout=1", "sasrec.device=cpu", "sasrec.bf16=true",
                           "sasrec.max_memory_gb=none", "ease.lambdas=[50, 100]", "ease.lam=300", "als.factors=32",
                           "als.alphas=[1, 10]"])  # fmt: skip
    assert got == {
        "sasrec": {"epochs": 20, "dropout": 1.0, "device": "cpu", "bf16": True, "max_memory_gb": None},
        "ease": {"lambdas": [50.0, 100.0], "lam": 300.0},
        "als": {"factors": 32, "alphas": [1.0, 10.0]},
    }
    assert isinstance(got["sasrec"]["dropout"], float) and isinstance(got["ease"]["lambdas"][0], float)
    assert isinstance(got["als"]["alphas"][0], float)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("sasrec.epochs", "expected MODEL.FIELD=VALUE"),
        ("sasrec.epochs=2.5", "sasrec.epochs takes int; got '2.5'"),
        ("sasrec.epochs=true", "sasrec.epochs takes int; got 'true'"),
        ("sasrec.max_memory_gb=lots", "sasrec.max_memory_gb takes float or None; got 'lots'"),
        ("ease.lambdas=[1, 'a']", "ease.lambdas takes a list of float"),
        ("ease.alpha=1", "ease has no field 'alpha'; fields: "),
    ],
)
def test_a_wrong_field_or_type_names_it(item, message):
    with pytest.raises(OverrideError, match=message.replace("[", r"\[")):
        parse_overrides([item])
