"""The search space: typed hyperparameters, their roles, and their mapping onto ``bayes_opt``.

Each parameter has a *kind* and a *role*:

* kinds: ``float`` (uniform), ``log`` (log-uniform float; the sampler works on log10 of it),
  ``int`` (integer range, both ends included) and ``choice`` (a set of values).
* roles: ``runtime`` parameters are assigned to variables, so trials with different values share
  one compiled program; ``structural`` parameters change the program and select it from the
  trainer's program cache.

When no role is given it is inferred: ``learning_rate``, ``label_smoothing`` and the optimizer's
``weight_decay``, ``beta_1``, ``beta_2``, ``momentum`` and ``epsilon`` (owned by the trainer) and
every ``float``/``log`` parameter are runtime; ``int`` and ``choice`` parameters, and
``optimizer``, are structural. A model builder receives a runtime parameter as a
:class:`tpu_bo.train.layers.RuntimeValue`, which refuses to be turned into a Python number, so
a model that would silently bake one trial's value into the program fails with a clear message
instead.

When the first build of a study reads an inferred-runtime parameter as a number anyway
(``keras.regularizers.L2(hp["l2"])``), the trainer re-plans it as structural
(:meth:`SearchSpace.read_as_number`): one program per value, said in the study's header by
:meth:`Param.describe`. The plan is the space's roles, so it enters the study's identity as if
``:structural`` had been given.

This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tpu_bo.errors import ConfigError

KINDS = ("float", "log", "int", "choice")
ROLES = ("runtime", "structural")

# Hyperparameters the trainer itself consumes; every other name must be read by the model. The
# optimizer's own (tpu_bo.train.program.make_optimizer) are read from variables at every step.
OPTIMIZER_RUNTIME = frozenset({"weight_decay", "beta_1", "beta_2", "momentum", "epsilon"})
# The learning-rate schedule's (--lr_schedule; tpu_bo.train.program.schedule_factor).
SCHEDULE_RUNTIME = frozenset({"warmup_steps", "decay_floor"})
TRAINER_RUNTIME = (
    frozenset({"learning_rate", "label_smoothing"}) | OPTIMIZER_RUNTIME | SCHEDULE_RUNTIME
)
TRAINER_STRUCTURAL = frozenset({"optimizer", "batch_size"})
TRAINER_PARAMS = TRAINER_RUNTIME | TRAINER_STRUCTURAL

BOUND_TOLERANCE = 0.01  # on_bound: within 1% of a range (of its log for a log parameter)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FLAG = "param"


def _fail(message: str) -> ConfigError:
    return ConfigError(_FLAG, message)


@dataclasses.dataclass(frozen=True)
class Param:
    """One hyperparameter of the search space.

    Attributes:
      name: The hyperparameter's name, as the model builder reads it.
      kind: One of ``float``, ``log``, ``int``, ``choice``.
      low: Lower bound (``float``/``log``/``int``).
      high: Upper bound (``float``/``log``/``int``); must be greater than ``low``.
      choices: The values of a ``choice`` parameter (at least two, all distinct).
      role: ``runtime``, ``structural`` or ``None`` to infer it (see the module docstring).
      read_by: What read this parameter as a number while the model was built, when that made
        it structural (:meth:`SearchSpace.read_as_number`); not part of its identity.
      active_when: Conditions ``(parent, values)``, all of which must hold (the parent's value
        is one of ``values``) for the model to read this parameter (KerasTuner's
        ``conditional_scope``). An inactive parameter is still drawn, but it does not tell
        programs apart (:meth:`SearchSpace.structure_key`).
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    role: str | None = None
    read_by: str = dataclasses.field(default="", compare=False)
    active_when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def __post_init__(self) -> None:
        conditions = tuple((str(parent), tuple(values)) for parent, values in self.active_when)
        object.__setattr__(self, "active_when", conditions)
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise _fail(f"{self.name!r} is not a valid name (use letters, digits and _).")
        if self.kind not in KINDS:
            raise _fail(
                f"unknown kind {self.kind!r} for {self.name!r}; use one of {', '.join(KINDS)}."
            )
        if self.role is not None and self.role not in ROLES:
            raise _fail(f"unknown role {self.role!r} for {self.name!r}; use runtime or structural.")
        if self.kind == "choice":
            self._check_choices()
        else:
            self._check_bounds()

    def _check_choices(self) -> None:
        choices = tuple(self.choices)
        object.__setattr__(self, "choices", choices)
        if not choices:
            raise _fail(f"choice {self.name!r} has no values; give at least two.")
        if len(choices) < 2:
            raise _fail(
                f"choice {self.name!r} has the single value {choices[0]!r}; give at least two, "
                "or fix the value with --fixed."
            )
        if len(set(choices)) != len(choices):
            raise _fail(f"choice {self.name!r} lists a value twice: {list(choices)}.")
        if self.role == "runtime" and not all(_is_number(c) for c in choices):
            raise _fail(f"runtime choice {self.name!r} must have numeric values only.")

    def _check_bounds(self) -> None:
        if self.low is None or self.high is None or self.choices:
            raise _fail(f"{self.kind} {self.name!r} needs a low and a high bound and no choices.")
        for bound in (self.low, self.high):
            if not _is_number(bound) or not math.isfinite(bound):
                raise _fail(f"{self.name!r} has a bound that is not a finite number: {bound!r}.")
        if self.low >= self.high:
            raise _fail(
                f"{self.name!r} has low={self.low:g} >= high={self.high:g}; "
                "give the smaller bound first and make the bounds differ."
            )
        if self.kind == "log" and self.low <= 0:
            raise _fail(f"log-scale {self.name!r} needs bounds > 0, got low={self.low:g}.")
        if self.kind == "int":
            if int(self.low) != self.low or int(self.high) != self.high:
                raise _fail(
                    f"int {self.name!r} needs whole-number bounds, got {self.low}, {self.high}."
                )
            object.__setattr__(self, "low", int(self.low))
            object.__setattr__(self, "high", int(self.high))
        else:
            object.__setattr__(self, "low", float(self.low))
            object.__setattr__(self, "high", float(self.high))

    @property
    def resolved_role(self) -> str:
        """The role used by the trainer: the explicit one, else the inferred one."""
        if self.role is not None:
            return self.role
        if self.name in TRAINER_RUNTIME:
            return "runtime"
        if self.name in TRAINER_STRUCTURAL:
            return "structural"
        return "runtime" if self.kind in ("float", "log") else "structural"

    def sampler_bounds(self) -> Any:
        """Returns this parameter's bounds in the form ``bayes_opt`` takes in ``pbounds``."""
        if self.kind == "float":
            return (self.low, self.high)
        if self.kind == "log":
            return (math.log10(self.low), math.log10(self.high))
        if self.kind == "int":
            return (self.low, self.high, int)
        # An explicit parameter object: bayes_opt reads a bare two-number list as float bounds,
        # so a choice between 16 and 32 would otherwise become a range.
        from bayes_opt.parameter import CategoricalParameter

        return CategoricalParameter(self.name, list(self.choices))

    def from_sampler(self, value: Any) -> Any:
        """Maps a value from the sampler's coordinates (bayes_opt's) to the value a trial uses."""
        if self.kind == "float":
            return float(min(max(value, self.low), self.high))
        if self.kind == "log":
            return float(min(max(10.0 ** float(value), self.low), self.high))
        if self.kind == "int":
            return int(min(max(round(float(value)), self.low), self.high))
        return _plain(value)

    def to_sampler(self, value: Any) -> Any:
        """Maps a trial's value back to the sampler's coordinates (for replaying a journal)."""
        if self.kind == "log":
            return math.log10(value)
        return value

    def values(self) -> tuple[Any, ...]:
        """Every value of a ``choice`` or ``int`` parameter, in order (a searched
        ``batch_size``'s sizes, say)."""
        if self.kind == "choice":
            return tuple(self.choices)
        if self.kind == "int":
            return tuple(range(int(self.low), int(self.high) + 1))
        raise ValueError(f"{self.kind} parameter {self.name!r} has no finite list of values")

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in this parameter's domain."""
        if self.kind == "choice":
            return value in self.choices
        if not _is_number(value):
            return False
        if self.kind == "int" and int(value) != value:
            return False
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, with the resolved role."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "role": self.resolved_role}
        if self.kind == "choice":
            out["choices"] = list(self.choices)
        else:
            out["low"], out["high"] = self.low, self.high
        if self.active_when:
            out["active_when"] = [[parent, list(values)] for parent, values in self.active_when]
        return out

    def active(self, values: Mapping[str, Any]) -> bool:
        """Whether the model reads this parameter under ``values`` (every condition holds)."""
        return all(values.get(parent) in allowed for parent, allowed in self.active_when)

    def describe(self) -> str:
        """A short human-readable form, e.g. ``learning_rate: log [0.0001, 0.01] runtime``;
        a parameter made structural by the model says why, e.g. ``l2: log [1e-05, 0.01]
        structural (read as a number while the model was built, by keras.regularizers.L2): one
        program per value``."""
        if self.kind == "choice":
            domain = "{" + ", ".join(str(c) for c in self.choices) + "}"
        else:
            domain = f"[{self.low:g}, {self.high:g}]"
        text = f"{self.name}: {self.kind} {domain} {self.resolved_role}"
        if self.read_by:
            text += (
                f" (read as a number while the model was built, by {self.read_by}): "
                "one program per value"
            )
        for parent, values in self.active_when:
            text += f" (when {parent} in {{{', '.join(str(v) for v in values)}}})"
        return text


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """An ordered set of :class:`Param`s with distinct names."""

    params: tuple[Param, ...]

    def __post_init__(self) -> None:
        params = tuple(self.params)
        object.__setattr__(self, "params", params)
        if not params:
            raise _fail("the search space is empty; give at least one --param.")
        names = [p.name for p in params]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise _fail(f"hyperparameter {dupes[0]!r} is given more than once.")
        for p in params:
            for parent, _ in p.active_when:
                if parent not in names or parent == p.name:
                    raise _fail(
                        f"{p.name!r} is active when {parent!r} takes some values, but "
                        f"{parent!r} is not another hyperparameter of the space."
                    )

    @property
    def names(self) -> list[str]:
        """Parameter names, in order."""
        return [p.name for p in self.params]

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def pbounds(self) -> dict[str, Any]:
        """The ``pbounds`` mapping for ``bayes_opt.BayesianOptimization``."""
        return {p.name: p.sampler_bounds() for p in self.params}

    def from_sampler(self, point: Mapping[str, Any]) -> dict[str, Any]:
        """Maps a ``bayes_opt`` suggestion to the hyperparameter values a trial uses."""
        return {p.name: p.from_sampler(point[p.name]) for p in self.params}

    def to_sampler(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Maps trial values back to the sampler's coordinates."""
        return {p.name: p.to_sampler(values[p.name]) for p in self.params}

    def contains(self, values: Mapping[str, Any]) -> bool:
        """Whether ``values`` gives every parameter a value inside its domain."""
        return all(p.name in values and p.contains(values[p.name]) for p in self.params)

    def structure_key(self, values: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
        """The values that select a compiled program: the structural parameters' (``None`` for
        one inactive under ``values``, whose value the model does not read)."""
        return tuple(
            (p.name, values[p.name] if p.active(values) else None)
            for p in self.params
            if p.resolved_role == "structural"
        )

    def read_as_number(self, name: str, by: str) -> SearchSpace:
        """This space with ``name`` structural, because ``by`` read it as a number while the
        model was built (the trainer's plan at a study's first build).

        Raises:
          ConfigError: naming ``param``, when ``name`` was given the role runtime explicitly.
        """
        param = self[name]
        if param.role == "runtime":
            raise _fail(
                f"{name!r} has the role runtime, but the model reads it as a number while it is "
                f"built (by {by}); drop ':runtime' to let it be structural (one program per "
                "value), or read it inside a layer's call with .read()."
            )
        new = dataclasses.replace(param, role="structural", read_by=by)
        return SearchSpace(tuple(new if p.name == name else p for p in self.params))

    def runtime_names(self) -> list[str]:
        """Names of the runtime parameters."""
        return [p.name for p in self.params if p.resolved_role == "runtime"]

    def some_point(self) -> dict[str, Any]:
        """A point of the space: every parameter at its low end or first choice (a study builds
        its first program from it before any trial is asked)."""
        return {p.name: p.choices[0] if p.kind == "choice" else p.low for p in self.params}

    def at_edge(self, values: Mapping[str, Any], tolerance: float = 0.02) -> list[str]:
        """Names of continuous parameters whose value lies within ``tolerance`` of a bound.

        The distance is measured as a fraction of the range, on the log scale for ``log``.
        """
        edges = []
        for p in self.params:
            if p.kind in ("float", "int", "log") and p.name in values:
                lo, hi = p.sampler_bounds()[:2]
                x = p.to_sampler(values[p.name])
                if min(x - lo, hi - x) <= tolerance * (hi - lo):
                    edges.append(p.name)
        return edges

    def on_bound(self, values: Mapping[str, Any]) -> list[str]:
        """Names of the parameters of ``values`` that sit on a bound: :meth:`at_edge` within
        ``BOUND_TOLERANCE`` (1%) of the range, what a guided trial "on a bound" counts."""
        return self.at_edge(values, BOUND_TOLERANCE)

    def to_list(self) -> list[dict[str, Any]]:
        """A JSON-ready description of every parameter."""
        return [p.to_dict() for p in self.params]

    @classmethod
    def parse(cls, specs: Iterable[str]) -> SearchSpace:
        """Builds a space from ``--param`` strings.

        Forms: ``name:float:LOW:HIGH``, ``name:log:LOW:HIGH``, ``name:int:LOW:HIGH`` and
        ``name:choice:V1,V2,...``, each optionally followed by ``:runtime`` or ``:structural``.

        Raises:
          ConfigError: naming ``param``, for any malformed spec.
        """
        return cls(tuple(parse_param(s) for s in specs))

    @classmethod
    def from_value(cls, value: Any) -> SearchSpace:
        """Builds a space from what a Python caller passes.

        Accepts a :class:`SearchSpace`, a sequence of :class:`Param`s or ``--param`` strings,
        or a mapping from name to a :class:`Param`, a dict (``{"kind": "log", "low": 1e-4,
        "high": 1e-2}``) or a tuple (``("log", 1e-4, 1e-2)``, ``("choice", [128, 256])``,
        optionally with a trailing role).
        """
        if isinstance(value, SearchSpace):
            return value
        if isinstance(value, Mapping):
            return cls(tuple(_param_from_entry(name, entry) for name, entry in value.items()))
        if isinstance(value, Sequence) and not isinstance(value, str):
            return cls(tuple(p if isinstance(p, Param) else parse_param(p) for p in value))
        raise _fail(f"cannot read a search space from {type(value).__name__}.")

    @classmethod
    def from_list(cls, items: Sequence[Mapping[str, Any]]) -> SearchSpace:
        """Inverse of :meth:`to_list`."""
        return cls(tuple(_param_from_entry(d["name"], {**d}) for d in items))


def parse_param(spec: str) -> Param:
    """Parses one ``--param`` string; see :meth:`SearchSpace.parse`."""
    if not isinstance(spec, str):
        raise _fail(f"expected a string like 'learning_rate:log:1e-4:1e-2', got {spec!r}.")
    parts = spec.strip().split(":")
    role = None
    if len(parts) > 2 and parts[-1] in ROLES:
        role = parts.pop()
    if len(parts) < 3:
        raise _fail(
            f"{spec!r} is not NAME:KIND:LOW:HIGH or NAME:choice:V1,V2 "
            "(e.g. learning_rate:log:1e-4:1e-2)."
        )
    name, kind = parts[0], parts[1]
    if kind not in KINDS:
        raise _fail(f"unknown kind {kind!r} in {spec!r}; use one of {', '.join(KINDS)}.")
    if kind == "choice":
        if len(parts) != 3:
            raise _fail(f"{spec!r}: a choice is NAME:choice:V1,V2,... with no other ':'.")
        values = [v.strip() for v in parts[2].split(",") if v.strip()]
        return Param(name, kind, choices=tuple(_parse_scalar(v) for v in values), role=role)
    if len(parts) != 4:
        raise _fail(f"{spec!r}: a {kind} parameter is NAME:{kind}:LOW:HIGH.")
    low, high = (_parse_number(v, spec) for v in parts[2:4])
    return Param(name, kind, low=low, high=high, role=role)


def parse_fixed(specs: Iterable[str]) -> dict[str, Any]:
    """Parses ``--fixed`` strings of the form ``name=value`` into a dict.

    Raises:
      ConfigError: naming ``fixed``, for a malformed entry or a repeated name.
    """
    fixed: dict[str, Any] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name) or not value.strip():
            raise ConfigError("fixed", f"{spec!r} is not NAME=VALUE (e.g. dense_units=256).")
        if name in fixed:
            raise ConfigError("fixed", f"{name!r} is fixed more than once.")
        fixed[name] = _parse_scalar(value.strip())
    return fixed


def _param_from_entry(name: str, entry: Any) -> Param:
    if isinstance(entry, Param):
        if entry.name != name:
            raise _fail(f"key {name!r} holds a Param named {entry.name!r}.")
        return entry
    if isinstance(entry, Mapping):
        entry = dict(entry)
        entry.pop("name", None)
        unknown = set(entry) - {"kind", "low", "high", "choices", "role", "active_when"}
        if unknown:
            raise _fail(f"{name!r} has unknown field(s) {sorted(unknown)}.")
        if "kind" not in entry:
            raise _fail(f"{name!r} has no 'kind'; use one of {', '.join(KINDS)}.")
        if "choices" in entry:
            entry["choices"] = tuple(entry["choices"])
        return Param(name, **entry)
    if isinstance(entry, Sequence) and not isinstance(entry, str) and entry:
        kind, *rest = entry
        role = rest.pop() if rest and rest[-1] in ROLES else None
        if kind == "choice" and len(rest) == 1 and not isinstance(rest[0], str):
            return Param(name, kind, choices=tuple(rest[0]), role=role)
        if kind != "choice" and len(rest) == 2:
            return Param(name, kind, low=rest[0], high=rest[1], role=role)
        if kind not in KINDS:
            raise _fail(f"unknown kind {kind!r} for {name!r}; use one of {', '.join(KINDS)}.")
    raise _fail(
        f"cannot read {name!r} from {entry!r}; use e.g. ('log', 1e-4, 1e-2) "
        "or ('choice', [128, 256])."
    )


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _parse_number(text: str, spec: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _fail(f"{text!r} in {spec!r} is not a number.") from None


def _parse_scalar(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _plain(value: Any) -> Any:
    """Turns numpy scalars into Python ones, so values stay JSON-ready."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value
