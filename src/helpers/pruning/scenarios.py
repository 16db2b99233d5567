"""Sparsity scenarios: how much of each layer type a pruning method removes.

A scenario is a pair of fractions removed (Douzandeh Zenoozi et al. 2025, Section 3): of the output
filters of every convolution (structured) and of the individual weights of every linear layer
(unstructured). The study's named scenarios are ``uniform`` (0.8 / 0.8), ``mixed`` (0.5 / 0.8) and
``linear_only`` (0.0 / 0.8); any ``{conv: x, linear: y}`` with ``0 <= x, y < 1`` may be given instead.
Per-layer counts are exact (:func:`units_removed`: 0.5 x 5 filters removes 2, not 3 by float noise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "Scenario",
    "SCENARIOS",
    "parse_scenario",
    "units_removed",
    "UnknownScenarioError",
    "InvalidSparsityError",
]


class UnknownScenarioError(ValueError):
    """A scenario name or value that is not one of :data:`SCENARIOS` nor ``{conv: x, linear: y}``."""


class InvalidSparsityError(ValueError):
    """A sparsity outside ``[0, 1)``."""


_ACCEPTED = "uniform, mixed, linear_only, or {conv: x, linear: y} with 0 <= x, y < 1"


def _check_fraction(kind: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidSparsityError(
            f"{kind} sparsity {value!r} is not a number; give a fraction removed in [0, 1), e.g. {kind}: 0.5"
        )
    value = float(value)
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise InvalidSparsityError(
            f"{kind} sparsity {value!r} is outside [0, 1); it is the fraction removed, so 0 keeps everything "
            f"and 1 (remove all) is not allowed; e.g. {kind}: 0.8"
        )
    return value


@dataclass(frozen=True)
class Scenario:
    """Fractions removed per layer type.

    Attributes:
        conv: fraction of output filters removed in every convolution, in ``[0, 1)``.
        linear: fraction of weights removed in every linear layer, in ``[0, 1)``.
    """

    conv: float
    linear: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "conv", _check_fraction("conv", self.conv))
        object.__setattr__(self, "linear", _check_fraction("linear", self.linear))

    @property
    def name(self) -> str:
        """The scenario's name: a key of :data:`SCENARIOS`, else ``conv<x>_linear<y>``."""
        for name, scenario in SCENARIOS.items():
            if scenario == self:
                return name
        return f"conv{self.conv:g}_linear{self.linear:g}"


SCENARIOS: dict[str, Scenario] = {
    "uniform": Scenario(0.8, 0.8),
    "mixed": Scenario(0.5, 0.8),
    "linear_only": Scenario(0.0, 0.8),
}


def parse_scenario(value: str | Mapping | Scenario) -> Scenario:
    """Turn a scenario name, mapping or :class:`Scenario` into a :class:`Scenario`.

    Args:
        value: ``"uniform"``, ``"mixed"``, ``"linear_only"``, a generated name such as
            ``"conv0.3_linear0.6"``, a mapping ``{"conv": x, "linear": y}``, or a :class:`Scenario`.

    Raises:
        UnknownScenarioError: the name or mapping is not recognised.
        InvalidSparsityError: a fraction is outside ``[0, 1)``.
    """
    if isinstance(value, Scenario):
        return value
    if isinstance(value, str):
        if value in SCENARIOS:
            return SCENARIOS[value]
        parsed = _parse_generated_name(value)
        if parsed is None:
            raise UnknownScenarioError(f"unknown scenario {value!r}; expected one of {_ACCEPTED}")
        return Scenario(*parsed)
    if isinstance(value, Mapping):
        if set(value) != {"conv", "linear"}:
            raise UnknownScenarioError(
                f"scenario mapping {dict(value)!r} must have exactly the keys conv and linear; expected one of "
                f"{_ACCEPTED}"
            )
        return Scenario(value["conv"], value["linear"])
    raise UnknownScenarioError(f"unknown scenario {value!r} of type {type(value).__name__}; expected one of {_ACCEPTED}")


def _parse_generated_name(name: str) -> tuple[float, float] | None:
    if not name.startswith("conv") or "_linear" not in name:
        return None
    conv_text, linear_text = name[len("conv") :].split("_linear", 1)
    try:
        return float(conv_text), float(linear_text)
    except ValueError:
        return None


def units_removed(n_units: int, fraction: float, *, keep_one: bool) -> int:
    """The exact number of units a layer of ``n_units`` loses at ``fraction`` removed.

    Args:
        n_units: filters (conv) or weights (linear) in the layer.
        fraction: fraction removed, in ``[0, 1)``.
        keep_one: never remove the last unit (convolutions keep at least one filter).

    Returns:
        ``round(fraction * n_units)`` rounded half to even on the fraction's decimal value, capped at
        ``n_units - 1`` when ``keep_one``.
    """
    removed = round(Fraction(repr(float(fraction))) * n_units)
    if keep_one:
        removed = min(removed, n_units - 1)
    return max(0, min(removed, n_units))
