"""KerasTuner's define-by-run ``HyperParameters``, reproduced: the space and the current values.

A model-building function asks for each hyperparameter where it uses it::

    units = hp.Int("units", min_value=32, max_value=512, step=32)
    if hp.Boolean("dropout"):
        ...

Each call registers the hyperparameter (its *declaration*: name, type, range, default and the
``conditional_scope`` it sits in) and returns its current value: the value the container
holds for that name, else the declaration's default, which it then holds. A hyperparameter
declared inside a ``conditional_scope`` whose parent's value is not among the scope's values
is *inactive*: it is registered, and the call returns ``None``. These are KerasTuner 1.4.8's
semantics (``keras_tuner/src/engine/hyperparameters/``), written again here so that tpu_bo
never imports ``keras_tuner``: defaults (``Int``/``Float``: ``min_value``; ``Choice``: the
first value; ``Boolean``: ``False``), the declarations' ``get_config()`` (what
``search_space_summary`` prints), ``values`` holding only active values, and ``get`` raising
``ValueError`` for an inactive name and ``KeyError`` for an unknown one.

How a declaration becomes a tpu_bo parameter is :mod:`tpu_bo.keras_tuner.space`'s business.
This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Sequence
from typing import Any

SAMPLINGS = ("linear", "log", "reverse_log")


class Parent:
    """The condition of a ``conditional_scope``: the parent's value is one of ``values``."""

    def __init__(self, name: str, values: Any) -> None:
        self.name = name
        values = list(values) if isinstance(values, (list, tuple, set)) else [values]
        first = values[0]
        if isinstance(first, str):
            values = [str(v) for v in values]
        elif isinstance(first, int) and not isinstance(first, bool):
            values = [int(v) for v in values]
        self.values = values

    def is_active(self, values: dict[str, Any]) -> bool:
        return self.name in values and values[self.name] in self.values

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Parent) and (other.name, other.values) == (self.name, self.values)

    __hash__ = None  # type: ignore[assignment] - mutable, compared by value as KerasTuner does

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "values": list(self.values)}

    def serialize(self) -> dict[str, Any]:
        """KerasTuner's serialized form (``search_space_summary`` prints it)."""
        return {"class_name": "Parent", "config": self.get_config()}

    def __repr__(self) -> str:
        return f"Parent(name={self.name!r}, values={self.values!r})"


class HyperParameter:
    """One declaration: a name, a default and the conditions that make it active."""

    def __init__(self, name: str, default: Any = None, conditions: Sequence[Parent] = ()) -> None:
        self.name = name
        self._default = default
        self.conditions = list(conditions)

    @property
    def default(self) -> Any:
        return self._default

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "default": self.default,
            "conditions": [c.serialize() for c in self.conditions],
        }

    def definition(self) -> tuple[Any, ...]:
        """What the declaration says but for its conditions (two builds must agree on it)."""
        config = self.get_config()
        config.pop("conditions")
        return (type(self).__name__, tuple(sorted((k, repr(v)) for k, v in config.items())))

    def copy(self, conditions: Sequence[Parent] | None = None) -> HyperParameter:
        new = copy.copy(self)
        new.conditions = list(self.conditions if conditions is None else conditions)
        return new


class Numerical(HyperParameter):
    """``Int`` and ``Float``: a range, a ``step`` and a ``sampling``."""

    def __init__(
        self,
        name: str,
        min_value: Any,
        max_value: Any,
        step: Any = None,
        sampling: str | None = "linear",
        default: Any = None,
        conditions: Sequence[Parent] = (),
    ) -> None:
        super().__init__(name, default, conditions)
        self.min_value, self.max_value, self.step = min_value, max_value, step
        self.sampling = (sampling or "linear").lower()
        kind = type(self).__name__
        if min_value > max_value:
            raise ValueError(
                f"For HyperParameters.{kind}(name='{name}'), min_value {min_value} is greater "
                f"than the max_value {max_value}."
            )
        if self.sampling not in SAMPLINGS:
            raise ValueError(
                f"For HyperParameters.{kind}(name='{name}'), sampling must be one of "
                f"{set(SAMPLINGS)}"
            )
        if self.sampling != "linear" and min_value <= 0:
            raise ValueError(
                f"For HyperParameters.{kind}(name='{name}'), sampling='{self.sampling}' does "
                f"not support negative values, found min_value: {min_value}."
            )
        if self.sampling != "linear" and step is not None and step <= 1:
            raise ValueError(
                f"For HyperParameters.{kind}(name='{name}'), expected step > 1 with "
                f"sampling='{self.sampling}'. Received: step={step}."
            )

    @property
    def default(self) -> Any:
        return self.min_value if self._default is None else self._default

    def grid(self) -> list[Any] | None:
        """The values a ``step`` allows, ascending (``None`` without a step): ``min + i *
        step`` (linear), ``min * step ** i`` (log), ``max + min - min * step ** i``
        (reverse_log), up to ``max_value``.

        KerasTuner counts ``(max - min) // step + 1`` linear values, which floating point can
        make one short of what its docs list (``0.5 // 0.1 == 4.0``); here a value within
        1e-9 steps of ``max_value`` counts, and each float is rounded to 12 digits (0.3, not
        0.30000000000000004).
        """
        if self.step is None:
            return None
        lo, hi, step = self.min_value, self.max_value, self.step
        if self.sampling == "linear":
            n = int(math.floor((hi - lo) / step + 1e-9)) + 1
            values = [lo + i * step for i in range(n)]
        else:
            n = int(math.log(hi / lo, step) + 1e-8) + 1
            values = [lo * step**i for i in range(n)]
            if self.sampling == "reverse_log":
                values = [hi + lo - v for v in values][::-1]
        return [self._cast(v) for v in values]

    def _cast(self, value: float) -> Any:
        return float(f"{value:.12g}")

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "min_value": self.min_value,
            "max_value": self.max_value,
            "step": self.step,
            "sampling": self.sampling,
        }


def _whole(value: Any, arg: str) -> int:
    if int(value) != value:
        raise ValueError(f"{arg} must be an int, Received: {value} of type {type(value)}.")
    return int(value)


class Int(Numerical):
    """An integer in ``[min_value, max_value]``, both ends included; ``step`` 1 by default
    (linear), a multiplier with ``sampling="log"``."""

    def __init__(
        self,
        name: str,
        min_value: int,
        max_value: int,
        step: int | None = None,
        sampling: str | None = "linear",
        default: int | None = None,
        conditions: Sequence[Parent] = (),
    ) -> None:
        if step is not None:
            step = _whole(step, "step")
        elif (sampling or "linear").lower() == "linear":
            step = 1
        super().__init__(
            name,
            _whole(min_value, "min_value"),
            _whole(max_value, "max_value"),
            step,
            sampling,
            default,
            conditions,
        )

    def _cast(self, value: float) -> int:
        return int(round(value))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "default": self._default}  # KerasTuner's: as given

    def __repr__(self) -> str:
        return (
            f"Int(name: '{self.name}', min_value: {self.min_value}, max_value: "
            f"{self.max_value}, step: {self.step}, sampling: {self.sampling}, default: "
            f"{self.default})"
        )


class Float(Numerical):
    """A float in ``[min_value, max_value]``; ``step`` (optional) the distance between values,
    a multiplier with ``sampling="log"`` or ``"reverse_log"``."""

    def __init__(
        self,
        name: str,
        min_value: float,
        max_value: float,
        step: float | None = None,
        sampling: str | None = "linear",
        default: float | None = None,
        conditions: Sequence[Parent] = (),
    ) -> None:
        step = None if step is None else float(step)
        super().__init__(
            name, float(min_value), float(max_value), step, sampling, default, conditions
        )

    def __repr__(self) -> str:
        return (
            f"Float(name: '{self.name}', min_value: '{self.min_value}', max_value: "
            f"'{self.max_value}', step: '{self.step}', sampling: '{self.sampling}', default: "
            f"'{self.default}')"
        )


class Choice(HyperParameter):
    """One of ``values`` (all of one type: int, float, str or bool)."""

    def __init__(
        self,
        name: str,
        values: Sequence[Any],
        ordered: bool | None = None,
        default: Any = None,
        conditions: Sequence[Parent] = (),
    ) -> None:
        super().__init__(name, default, conditions)
        if not values:
            raise ValueError("`values` must be provided for `Choice`.")
        types = {type(v) for v in values}
        if len(types) > 1:
            raise TypeError(
                "A `Choice` can contain only one type of value, found values: "
                f"{list(values)} with types {types}."
            )
        first = values[0]
        if isinstance(first, str):
            values = [str(v) for v in values]
            default = None if default is None else str(default)
        elif isinstance(first, int) and not isinstance(first, bool):
            values = [int(v) for v in values]
            default = None if default is None else int(default)
        elif not isinstance(first, (bool, float)):
            raise TypeError(
                "A `Choice` can contain only `int`, `float`, `str`, or `bool`, found values: "
                f"{list(values)} with types: {type(first)}"
            )
        if default is not None and default not in values:
            raise ValueError(
                "The default value should be one of the choices. You passed: "
                f"values={list(values)}, default={default}"
            )
        self._values, self._default = list(values), default
        numeric = isinstance(first, (int, float)) and not isinstance(first, bool)
        if ordered and not numeric:
            raise ValueError("`ordered` must be `False` for non-numeric types.")
        self.ordered = numeric if ordered is None else bool(ordered)

    @property
    def values(self) -> list[Any]:
        return self._values

    @property
    def default(self) -> Any:
        return self._values[0] if self._default is None else self._default

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "values": list(self._values), "ordered": self.ordered}

    def __repr__(self) -> str:
        return (
            f"Choice(name: '{self.name}', values: {self._values}, ordered: {self.ordered}, "
            f"default: {self.default})"
        )


class Boolean(HyperParameter):
    """``True`` or ``False``."""

    def __init__(self, name: str, default: bool = False, conditions: Sequence[Parent] = ()):
        super().__init__(name, default, conditions)
        if default not in (True, False):
            raise ValueError(f"`default` must be a Python boolean. You passed: default={default}")

    @property
    def values(self) -> tuple[bool, bool]:
        return (True, False)

    def __repr__(self) -> str:
        return f'Boolean(name: "{self.name}", default: {self.default})'


class Fixed(HyperParameter):
    """A value that is not tuned."""

    def __init__(self, name: str, value: Any, conditions: Sequence[Parent] = ()) -> None:
        if isinstance(value, bool):
            value = bool(value)
        elif isinstance(value, int):
            value = int(value)
        elif not isinstance(value, (float, str)):
            raise ValueError(
                f"`Fixed` value must be an `int`, `float`, `str`, or `bool`, found {value}"
            )
        super().__init__(name, value, conditions)
        self.value = value

    @property
    def values(self) -> tuple[Any]:
        return (self.value,)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("default")
        return {**config, "value": self.value}

    def __repr__(self) -> str:
        return f"Fixed(name: {self.name}, value: {self.value})"


class HyperParameters:
    """The container a model-building function receives (KerasTuner's ``HyperParameters``).

    Attributes:
      values: The current value of every *active* hyperparameter, by name.
      space: Every declaration registered so far, in order (parents before their children).
    """

    def __init__(self) -> None:
        self._name_scopes: list[str] = []
        self._conditions: list[Parent] = []
        self._hps: dict[str, list[HyperParameter]] = {}
        self._space: list[HyperParameter] = []
        self.values: dict[str, Any] = {}
        # Stacks of conditions of the conditional scopes opened in a build (KerasTuner's).
        self.active_scopes: list[list[Parent]] = []
        self.inactive_scopes: list[list[Parent]] = []

    @property
    def space(self) -> list[HyperParameter]:
        return self._space

    @contextlib.contextmanager
    def name_scope(self, name: str) -> Iterator[None]:
        """Prefixes the names declared inside with ``name/``."""
        self._name_scopes.append(name)
        try:
            yield
        finally:
            self._name_scopes.pop()

    @contextlib.contextmanager
    def conditional_scope(self, parent_name: str, parent_values: Any) -> Iterator[None]:
        """Hyperparameters declared inside are active only while the hyperparameter
        ``parent_name`` takes one of ``parent_values``; inactive, a declaration returns ``None``
        (the Python code inside runs either way).

        Raises:
          ValueError: ``parent_name`` has not been declared.
        """
        parent_name = self._full_name(parent_name)
        if parent_name not in self._hps:
            raise ValueError(f"`HyperParameter` named: {parent_name} not defined.")
        condition = Parent(parent_name, parent_values)
        self._conditions.append(condition)
        scopes = self.active_scopes if condition.is_active(self.values) else self.inactive_scopes
        scopes.append(copy.deepcopy(self._conditions))
        try:
            yield
        finally:
            self._conditions.pop()

    def is_active(self, hyperparameter: HyperParameter | str) -> bool:
        """Whether a declaration (or any declaration of a name) has all its conditions met."""
        if isinstance(hyperparameter, HyperParameter):
            return self._met(hyperparameter.conditions)
        return any(self._met(hp.conditions) for hp in self._hps.get(str(hyperparameter), []))

    def get(self, name: str) -> Any:
        """The current value of ``name``.

        Raises:
          ValueError: ``name`` is declared but inactive.
          KeyError: ``name`` is not declared.
        """
        name = self._full_name(name)
        if name in self.values:
            return self.values[name]
        if name in self._hps:
            raise ValueError(f"{name} is currently inactive.")
        raise KeyError(f"{name} does not exist.")

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except (KeyError, ValueError):
            return False
        return True

    # The declarations.

    def Int(  # noqa: N802 - KerasTuner's name
        self,
        name: str,
        min_value: int,
        max_value: int,
        step: int | None = None,
        sampling: str = "linear",
        default: int | None = None,
        parent_name: str | None = None,
        parent_values: Any = None,
    ) -> int | None:
        """An integer in ``[min_value, max_value]`` (both included); see :class:`Int`."""
        with self._maybe_scope(parent_name, parent_values):
            hp = Int(self._full_name(name), min_value, max_value, step, sampling, default)
            return self._retrieve(hp)

    def Float(  # noqa: N802 - KerasTuner's name
        self,
        name: str,
        min_value: float,
        max_value: float,
        step: float | None = None,
        sampling: str = "linear",
        default: float | None = None,
        parent_name: str | None = None,
        parent_values: Any = None,
    ) -> Any:
        """A float in ``[min_value, max_value]``; see :class:`Float`. Inside a tpu_bo study a
        runtime one is a :class:`tpu_bo.train.layers.RuntimeValue` (docs/keras_tuner.md)."""
        with self._maybe_scope(parent_name, parent_values):
            hp = Float(self._full_name(name), min_value, max_value, step, sampling, default)
            return self._retrieve(hp)

    def Choice(  # noqa: N802 - KerasTuner's name
        self,
        name: str,
        values: Sequence[Any],
        ordered: bool | None = None,
        default: Any = None,
        parent_name: str | None = None,
        parent_values: Any = None,
    ) -> Any:
        """One of ``values``; see :class:`Choice`."""
        with self._maybe_scope(parent_name, parent_values):
            return self._retrieve(Choice(self._full_name(name), values, ordered, default))

    def Boolean(  # noqa: N802 - KerasTuner's name
        self,
        name: str,
        default: bool = False,
        parent_name: str | None = None,
        parent_values: Any = None,
    ) -> bool | None:
        """``True`` or ``False``; see :class:`Boolean`."""
        with self._maybe_scope(parent_name, parent_values):
            return self._retrieve(Boolean(self._full_name(name), default))

    def Fixed(  # noqa: N802 - KerasTuner's name
        self, name: str, value: Any, parent_name: str | None = None, parent_values: Any = None
    ) -> Any:
        """A value that is not tuned; see :class:`Fixed`."""
        with self._maybe_scope(parent_name, parent_values):
            return self._retrieve(Fixed(self._full_name(name), value))

    # Copies.

    def copy(self) -> HyperParameters:
        """A container with the same declarations and values."""
        new = HyperParameters()
        for hp in self._space:
            new._add(hp.copy())
        new.values = dict(self.values)
        return new

    def merge(self, hps: HyperParameters | Sequence[HyperParameter], overwrite: bool = True):
        """Registers the declarations of ``hps``; ``overwrite`` resets a name's value to its
        declaration's default."""
        space = hps.space if isinstance(hps, HyperParameters) else list(hps)
        for hp in space:
            if overwrite or not self._exists(hp.name, hp.conditions):
                self._register(hp, overwrite=overwrite)

    def get_config(self) -> dict[str, Any]:
        return {
            "space": [
                {"class_name": type(p).__name__, "config": p.get_config()} for p in self.space
            ],
            "values": dict(self.values),
        }

    # Internals.

    def _full_name(self, name: str) -> str:
        return "/".join([*self._name_scopes, str(name)])

    def _met(self, conditions: Sequence[Parent]) -> bool:
        return all(c.is_active(self.values) for c in conditions)

    def _exists(self, name: str, conditions: Sequence[Parent]) -> bool:
        return any(hp.conditions == list(conditions) for hp in self._hps.get(name, []))

    def _retrieve(self, hp: HyperParameter) -> Any:
        hp.conditions = list(self._conditions)
        if self._exists(hp.name, hp.conditions):
            return self.values.get(hp.name) if self.is_active(hp) else None
        return self._register(hp)

    def _add(self, hp: HyperParameter) -> None:
        self._hps.setdefault(hp.name, []).append(hp)
        self._space.append(hp)

    def _register(self, hp: HyperParameter, overwrite: bool = False) -> Any:
        if any(c.name == hp.name for c in hp.conditions):
            raise ValueError(
                "A conditional `HyperParameter` cannot have the same name as its parent. "
                f"Found: {hp.name} and parent_name: {hp.name}"
            )
        hp = hp.copy()
        self._add(hp)
        if not self.is_active(hp):
            return None  # an inactive value is never handed out
        if overwrite or hp.name not in self.values:
            self.values[hp.name] = hp.default
        return self.values[hp.name]

    @contextlib.contextmanager
    def _maybe_scope(self, parent_name: str | None, parent_values: Any) -> Iterator[None]:
        if parent_name:
            with self.conditional_scope(parent_name, parent_values):
                yield
        else:
            yield

    def __repr__(self) -> str:
        return f"HyperParameters(values={self.values!r})"


def active_values(space: Sequence[HyperParameter], values: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` whose declarations are active under ``values`` itself, in the
    order of ``space`` (parents come before their children)."""
    out: dict[str, Any] = {}
    for hp in space:
        if hp.name in values and hp.name not in out:
            if all(c.is_active(out) for c in hp.conditions):
                out[hp.name] = values[hp.name]
    return out


def with_values(space: Sequence[HyperParameter], values: dict[str, Any]) -> HyperParameters:
    """A container holding the declarations ``space`` and, of ``values``, the active ones."""
    hp = HyperParameters()
    for declaration in space:
        hp._add(declaration.copy())
    hp.values = active_values(space, values)
    return hp
