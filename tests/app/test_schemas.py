"""Request validation: the text alphabet (ASCII only), ranges, finite style values, unknown fields."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from app.errors import validation_issues
from app.limits import check_text
from app.schemas import GenerateRequest


@pytest.mark.parametrize("text", ["0", "42", "2026", " 1 2 ", "0123456789" * 3 + "01", "9" * 32])
def test_ascii_digits_and_spaces_are_accepted(text: str) -> None:
    assert GenerateRequest(text=text).text == text


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("\u0663", "U+0663"),  # Arabic-Indic three: str.isdigit() is True, we refuse it
        ("4\u00b2", "U+00B2"),  # superscript two
        ("\uff14\uff12", "U+FF14"),  # fullwidth digits
        ("\u09e7", "U+09E7"),  # Bengali one
        ("4a", "'a'"),
        ("-1", "'-'"),
        ("1\t2", "U+0009"),
        ("   ", "at least one digit"),
        ("", "at least 1 character"),
        ("1" * 33, "at most 32 characters"),
    ],
)
def test_other_text_is_refused_with_a_clear_message(text: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        GenerateRequest(text=text)
    assert fragment in str(info.value)


def test_check_text_is_the_single_rule() -> None:
    assert check_text("1 2") == "1 2"
    with pytest.raises(ValueError, match="ASCII digits"):
        check_text("\u0661")


def test_defaults() -> None:
    req = GenerateRequest(text="7")
    assert (req.samples, req.seed, req.temperature, req.style, req.scale, req.invert) == (
        1,
        None,
        None,
        None,
        1,
        False,
    )


@pytest.mark.parametrize(
    "field,value",
    [
        ("samples", 0),
        ("samples", 17),
        ("seed", -1),
        ("seed", 2**63),
        ("temperature", -0.1),
        ("temperature", 2.01),
        ("scale", 0),
        ("scale", 9),
        ("temperature", math.nan),
        ("style", []),
        ("style", [math.nan]),
        ("style", [math.inf, 0.0]),
        ("style", "abc"),
    ],
)
def test_out_of_range_fields_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        GenerateRequest(text="1", **{field: value})


def test_edges_are_accepted() -> None:
    req = GenerateRequest(text="1", samples=16, seed=2**63 - 1, temperature=2, scale=8, style=[0.0, -1e30])
    assert req.seed == 2**63 - 1 and req.style == [0.0, -1e30]


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        GenerateRequest(text="1", colour="red")  # type: ignore[call-arg]


def test_validation_issues_always_serialise() -> None:
    with pytest.raises(ValidationError) as info:
        GenerateRequest(text="1", style=[math.nan, math.inf])
    issues = validation_issues(info.value.errors())
    assert [i["loc"] for i in issues] == [["style", 0], ["style", 1]]
    assert all(set(i) == {"loc", "msg", "type"} for i in issues)
    import json

    json.dumps(issues, allow_nan=False)  # no NaN echoed back
