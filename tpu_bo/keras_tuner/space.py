"""A KerasTuner model-building function as a tpu_bo study: its space, found by building it, and
the builder adapter ``builder(hp, input_shape, num_classes)`` the trainer calls.

**Discovery** (:func:`discover`). Like KerasTuner, the space is what the function declares when
it runs. A tpu_bo study fixes its space before its first trial, so every hyperparameter must be
seen before the study starts, also one that only a later build declares (``if hp.Boolean(
"dropout"): hp.Float("rate", ...)``, ``for i in range(hp.Int("layers", 1, 3)): hp.Int(f"units_{i}",
...)``, a ``conditional_scope``). So the function is built once at the defaults, then once more
for each other value of each ``Choice`` and ``Boolean``, and for the ends of each ``Int``'s
range, each variation made where its hyperparameter was first declared (with the values of the
variation that revealed it): a hyperparameter that a variation reveals is varied in turn, until
the space stops growing (at most :data:`MAX_BUILDS` builds). Two declarations of one name must
agree on everything but their conditions, or it is a ``ConfigError`` naming ``hypermodel``.

**The mapping** (:class:`Space`). Each declaration becomes one :class:`tpu_bo.Param`:

* ``Int``: ``int`` (step 1), else a ``choice`` of its grid (a step must divide the range);
  ``sampling="log"`` without a step: a structural ``log`` parameter rounded to an integer;
* ``Float``: ``float`` or ``log`` (runtime: one program for every value); with a step, a
  ``choice`` of its grid, runtime when the model only hands it to layers that read it at run time
  (checked by one build with runtime values, as the trainer does), else structural;
  ``sampling="reverse_log"``: a structural ``log`` parameter ``<name>_reflected`` holding
  ``max + min - value``;
* ``Choice``/``Boolean``: a ``choice`` (float values: runtime as above; the others structural);
  ``Fixed``, and a range or choice of one value, are not searched.

A hyperparameter whose value the compiled optimizer holds (``Adam(learning_rate=hp.Float("lr",
...))``: found by building once with only that value changed and reading the optimizer's config)
becomes tpu_bo's trainer parameter of that name (``learning_rate``, ``beta_1``, ``weight_decay``
...), which the trainer's copy of the compiled optimizer reads from a variable at every step
(``tpu_bo.train.program.make_optimizer``): one program for every learning rate. Inside a tower the
function then gets a plain stand-in number for it (the compiled optimizer's own rate is replaced);
everywhere else (a saved or loaded model) the trial's number. Another name the trainer owns
(``optimizer``, ``batch_size``, ``label_smoothing``...) is renamed ``hp_<name>``, so a model's own
choice of optimizer stays the model's. Names are made valid tpu_bo names (``a/b`` -> ``a_b``).

Parameters that are inactive in a trial are still drawn by the sampler (tpu_bo's space is flat);
the function ignores them, as KerasTuner's does.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tpu_bo.errors import ConfigError, first_line
from tpu_bo.keras_tuner.hyperparameters import (
    Boolean,
    Choice,
    Fixed,
    Float,
    HyperParameter,
    HyperParameters,
    Int,
    active_values,
)
from tpu_bo.search.space import OPTIMIZER_RUNTIME, TRAINER_PARAMS, Param, SearchSpace

log = logging.getLogger("tpu_bo")

MAX_BUILDS = 64  # discovery's builds, at most
OPTIMIZER_NAMES = ("learning_rate", *sorted(OPTIMIZER_RUNTIME))


@dataclasses.dataclass
class Entry:
    """One declared hyperparameter and the tpu_bo parameter that searches it.

    Attributes:
      declaration: The KerasTuner declaration (the first one seen of its name).
      name: The tpu_bo parameter's name.
      param: The tpu_bo parameter, or ``None`` when it is not searched (``Fixed``, one value).
      kind: How a trial's value becomes the declaration's: ``same``, ``int``, ``round`` (a log
        integer), ``reflected`` (``max + min - value``).
      feeds: The trainer's parameter it is (then ``name`` is that): the compiled optimizer's
        ``learning_rate``, ``beta_1``... or ``batch_size`` (a ``HyperModel.fit``'s), else "".
    """

    declaration: HyperParameter
    name: str
    param: Param | None
    kind: str = "same"
    feeds: str = ""

    def value(self, given: Any) -> Any:
        """The declaration's value from a trial's value (a RuntimeValue passes through, but
        for the optimizer's, which the compiled optimizer gets as a stand-in number)."""
        if _is_runtime(given):
            return float(self.declaration.default) if self.feeds else given
        if self.kind == "int":
            return int(given)
        if self.kind == "round":
            return int(round(float(given)))
        if self.kind == "reflected":
            d = self.declaration
            return d.max_value + d.min_value - float(given)  # type: ignore[attr-defined]
        return given

    def trial_value(self, value: Any) -> Any:
        """Inverse of :meth:`value`: a declaration's value as the tpu_bo parameter's."""
        if self.kind == "reflected":
            d = self.declaration
            return d.max_value + d.min_value - float(value)  # type: ignore[attr-defined]
        return value


def _is_runtime(value: Any) -> bool:
    """Whether ``value`` is a :class:`tpu_bo.train.layers.RuntimeValue` (without importing
    TensorFlow: only a study, which has, makes one)."""
    return any(c.__name__ == "RuntimeValue" for c in type(value).__mro__)


class Space:
    """The discovered declarations of a model-building function and their tpu_bo parameters.

    Args:
      declarations: Every declaration, in order (:func:`discover`).
      feeds: KerasTuner name -> the trainer's parameter it is (:func:`optimizer_feeds`,
        :func:`fit_batch`).
      runtime: KerasTuner names of float choices that may be runtime.
      searched: The names to search (``tune_new_entries=False``: the given ones), or ``None``.
    """

    def __init__(
        self,
        declarations: Sequence[HyperParameter],
        *,
        feeds: Mapping[str, str] | None = None,
        runtime: Sequence[str] = (),
        searched: set[str] | None = None,
    ) -> None:
        self.declarations = list(declarations)
        self.feeds = dict(feeds or {})
        self.runtime = set(runtime)
        self.entries: dict[str, Entry] = {}
        taken: set[str] = set()
        for d in self.declarations:
            if d.name in self.entries:
                continue
            tuned = searched is None or d.name in searched
            entry = _entry(d, self.feeds.get(d.name, ""), d.name in self.runtime, taken, tuned)
            taken.add(entry.name)
            self.entries[d.name] = entry
        for kt_name, entry in self.entries.items():
            conditions = self._active_when(kt_name)
            if entry.param is not None and conditions:
                entry.param = dataclasses.replace(entry.param, active_when=conditions)
        if not any(e.param for e in self.entries.values()):
            raise ConfigError(
                "hypermodel",
                "the model-building function declares no hyperparameter to search (every one "
                "is Fixed or has a single value); declare one with hp.Int, hp.Float, hp.Choice "
                "or hp.Boolean.",
            )

    def _active_when(self, kt_name: str) -> tuple[tuple[str, tuple[Any, ...]], ...]:
        """The ``conditional_scope`` conditions of ``kt_name`` as tpu_bo's ``active_when``, so
        that an inactive structural parameter does not tell programs apart. Only when every
        declaration of the name sits in the same scopes, and every parent is searched with its
        own values (a Choice, Boolean or grid); otherwise none: always active, as if flat."""
        found = [d.conditions for d in self.declarations if d.name == kt_name]
        if not found[0] or any(c != found[0] for c in found[1:]):
            return ()
        out = []
        for c in found[0]:
            parent = self.entries.get(c.name)
            if parent is None or parent.param is None or parent.kind not in ("same", "int"):
                return ()
            out.append((parent.name, tuple(parent.trial_value(v) for v in c.values)))
        return tuple(out)

    def search_space(self) -> SearchSpace:
        """The tpu_bo search space."""
        return SearchSpace(tuple(e.param for e in self.entries.values() if e.param))

    def defaults(self) -> dict[str, Any]:
        """Every declaration's default (KerasTuner names)."""
        return {n: e.declaration.default for n, e in self.entries.items()}

    def fixed(self) -> dict[str, Any]:
        """The declarations that are not searched, at their defaults (KerasTuner names)."""
        return {n: e.declaration.default for n, e in self.entries.items() if e.param is None}

    def values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's tpu_bo parameters as KerasTuner values, the active ones only."""
        values = self.fixed()
        for kt_name, e in self.entries.items():
            if e.param is not None and e.name in params:
                values[kt_name] = e.value(params[e.name])
        return active_values(self.declarations, values)

    def params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """KerasTuner values (defaults for the missing ones) as tpu_bo parameters."""
        return {
            e.name: e.trial_value(values.get(kt_name, e.declaration.default))
            for kt_name, e in self.entries.items()
            if e.param is not None
        }

    def roles(self) -> list[str]:
        """One line per searched hyperparameter: its tpu_bo parameter and role."""
        lines = []
        for kt_name, e in self.entries.items():
            if e.param is None:
                continue
            line = e.param.describe()
            if e.feeds == "batch_size":
                line += f" ({kt_name}: HyperModel.fit's batch_size)"
            elif e.feeds:
                line += f" ({kt_name}: the compiled optimizer's {e.feeds})"
            elif e.name != kt_name:
                line += f" ({kt_name})"
            lines.append(line)
        return lines

    def builder(
        self, hypermodel: Any, compile_args: Mapping[str, Any] | None = None
    ) -> Callable[..., Any]:
        """The tpu_bo builder ``builder(hp, input_shape, num_classes)`` of ``hypermodel``.

        It hands ``hypermodel.build`` a :class:`HyperParameters` holding the trial's active
        values, and compiles the model again with ``compile_args`` (the tuner's ``optimizer``,
        ``loss`` and ``metrics``) when given. A hyperparameter that discovery did not see takes
        its default, with one warning.
        """
        known = {d.name for d in self.declarations}
        warned: set[str] = set()
        compile_args = {k: v for k, v in (compile_args or {}).items() if v is not None}

        def build(hp: Mapping[str, Any], input_shape: Any, num_classes: Any) -> Any:
            del input_shape, num_classes  # a KerasTuner function takes hp alone
            given = {name: hp[name] for name in hp}  # the trainer checks each one is read
            container = HyperParameters()
            container.values = self.values(given)
            model = hypermodel.build(container)
            new = sorted({d.name for d in container.space} - known - warned)
            if new:
                warned.update(new)
                log.warning(
                    "hyperparameter(s) %s first declared during a trial: they keep their "
                    "defaults (the space was fixed before the study started)",
                    ", ".join(new),
                )
            if compile_args:
                recompile(model, compile_args)
            return model

        build.__module__ = getattr(hypermodel, "module", type(hypermodel).__module__)
        build.__qualname__ = getattr(hypermodel, "qualname", type(hypermodel).__qualname__)
        return build


def recompile(model: Any, given: Mapping[str, Any]) -> None:
    """Compiles ``model`` again with the tuner's ``optimizer``/``loss``/``metrics`` replacing its
    own (KerasTuner's ``Tuner._override_compile_args``)."""
    own = getattr(getattr(model, "_compile_config", None), "config", None) or {}
    args = {
        "optimizer": own.get("optimizer") or getattr(model, "optimizer", None) or "rmsprop",
        "loss": own.get("loss"),
        "metrics": own.get("metrics"),
    }
    args.update(given)
    model.compile(**args)


def _entry(d: HyperParameter, feeds: str, runtime: bool, taken: set[str], tuned: bool) -> Entry:
    """The tpu_bo parameter of declaration ``d`` (see the module docstring)."""
    name = feeds or _safe_name(d.name, taken)
    if not tuned or isinstance(d, Fixed):
        return Entry(d, name, None)
    if isinstance(d, Boolean):
        return Entry(d, name, Param(name, "choice", choices=(False, True)))
    if isinstance(d, Choice):
        if len(d.values) == 1:
            return Entry(d, name, None)
        role = "runtime" if runtime and not feeds else None
        param = Param(name, "choice", choices=tuple(d.values), role=role)
        return Entry(d, name, param, "same", feeds)
    assert isinstance(d, (Int, Float))
    grid = _checked_grid(d)
    if grid is not None:
        if len(grid) == 1:
            return Entry(d, name, None)
        role = "runtime" if runtime and isinstance(d, Float) and not feeds else None
        kind = "int" if isinstance(d, Int) else "same"
        param = Param(name, "choice", choices=tuple(grid), role=role)
        return Entry(d, name, param, kind, feeds)
    lo, hi = d.min_value, d.max_value
    if lo == hi:
        return Entry(d, name, None)
    if d.sampling == "reverse_log":
        name = _safe_name(f"{d.name}_reflected", taken)
        return Entry(d, name, Param(name, "log", lo, hi, role="structural"), "reflected")
    if isinstance(d, Int) and d.sampling == "linear":
        return Entry(d, name, Param(name, "int", lo, hi), "int")
    if isinstance(d, Int):  # log sampling without a step
        return Entry(d, name, Param(name, "log", lo, hi, role="structural"), "round")
    kind = "log" if d.sampling == "log" else "float"
    return Entry(d, name, Param(name, kind, lo, hi), "same", feeds)


def _checked_grid(d: Int | Float) -> list[Any] | None:
    """The declaration's grid (``None`` without a step, or for an ``Int`` of step 1), after
    checking that the step divides the range.

    Raises:
      ConfigError: naming ``step``.
    """
    if d.step is None or (isinstance(d, Int) and d.sampling == "linear" and d.step == 1):
        return None
    lo, hi, step = d.min_value, d.max_value, d.step
    if d.sampling == "linear":
        count = (hi - lo) / step
    else:
        count = math.log(hi / lo, step)
    if abs(count - round(count)) > 1e-6 * max(1.0, abs(count)):
        how = "+" if d.sampling == "linear" else "x"
        raise ConfigError(
            "step",
            f"{type(d).__name__} {d.name!r}: step {step:g} does not divide the range [{lo:g}, "
            f"{hi:g}] (steps of {how}{step:g} from {lo:g} miss {hi:g}); give a max_value the "
            "steps reach, or a step that divides the range.",
        )
    return d.grid()


def _safe_name(name: str, taken: set[str]) -> str:
    """A valid tpu_bo parameter name for ``name``, not ``taken`` and not the trainer's own."""
    safe = re.sub(r"\W", "_", name)
    if not re.match(r"^[A-Za-z_]", safe):
        safe = f"hp_{safe}"
    if safe in TRAINER_PARAMS:
        safe = f"hp_{safe}"
    candidate, i = safe, 2
    while candidate in taken or candidate in TRAINER_PARAMS:
        candidate, i = f"{safe}_{i}", i + 1
    return candidate


# Discovery.


def discover(
    hypermodel: Any,
    preset: HyperParameters | None = None,
    run: Callable[[Any, HyperParameters], Any] | None = None,
) -> tuple[list[HyperParameter], int]:
    """Every declaration of ``hypermodel.build``, found by building it (see the module
    docstring); returns them, in order, and the number of builds.

    Args:
      hypermodel: An object with ``build(hp)``.
      preset: The tuner's ``hyperparameters``: declarations registered before every build
        (they win over the function's own of the same name, as in KerasTuner).
      run: What one build is, ``run(hypermodel, hp)``: by default ``hypermodel.build(hp)``;
        :func:`build_and_fit` with an overridden ``HyperModel.fit``.

    Raises:
      ConfigError: naming ``hypermodel``, when two declarations of a name disagree.
    """
    preset_space = list(preset.space) if preset is not None else []
    declarations: list[HyperParameter] = []
    definitions: dict[str, HyperParameter] = {}
    for d in preset_space:
        _merge(d, declarations, definitions)
    queue: list[dict[str, Any]] = [{}]
    builds = 0
    while queue and builds < MAX_BUILDS:
        overrides = queue.pop(0)
        seen_before = set(definitions) if builds else set()
        try:
            container = build_with(hypermodel, preset_space, overrides, run)
        except Exception as e:  # noqa: BLE001 - the user's function may refuse a combination
            if not builds:
                raise
            log.debug("discovery: the build with %s failed (%s)", overrides, first_line(e))
            builds += 1
            continue
        builds += 1
        for d in container.space:
            _merge(d, declarations, definitions)
        for d in container.space:
            if d.name in seen_before or d.name in overrides:
                continue
            used = container.values.get(d.name, d.default)
            for value in _alternatives(d):
                if value != used:
                    queue.append({**overrides, d.name: value})
            seen_before.add(d.name)
    if queue:
        log.warning(
            "discovery of the hyperparameters stopped after %d builds; one first declared in a "
            "later build keeps its default",
            builds,
        )
    return declarations, builds


def build_with(
    hypermodel: Any,
    preset: Sequence[HyperParameter],
    values: Mapping[str, Any],
    run: Callable[[Any, HyperParameters], Any] | None = None,
) -> HyperParameters:
    """Runs ``hypermodel.build`` (or ``run``) on a container holding ``preset`` and ``values``;
    returns the container."""
    container = HyperParameters()
    container.merge(list(preset))
    container.values.update(values)
    (run or _build)(hypermodel, container)
    return container


def _build(hypermodel: Any, hp: HyperParameters) -> Any:
    return hypermodel.build(hp)


class FitRecorder:
    """Stands in for the model inside an overridden ``HyperModel.fit``: records each
    ``model.fit`` call (its arguments) instead of training; every other attribute is the
    model's."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fit(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append((args, kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def build_and_fit(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Callable[..., Any]:
    """A ``run`` for :func:`discover`: builds, then calls ``hypermodel.fit(hp, recorder,
    *args, **kwargs)`` (``search``'s arguments) with a :class:`FitRecorder`; returns its calls."""

    def run(hypermodel: Any, hp: HyperParameters) -> list[tuple[tuple[Any, ...], dict]]:
        recorder = FitRecorder(hypermodel.build(hp))
        hypermodel.fit(hp, recorder, *args, **dict(kwargs))
        return recorder.calls

    return run


def fit_batch(
    hypermodel: Any,
    declarations: Sequence[HyperParameter],
    preset: Sequence[HyperParameter],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> tuple[str, int | None]:
    """What an overridden ``HyperModel.fit`` changes in its ``model.fit`` call: the
    hyperparameter it passes as ``batch_size`` (``""`` for none), and the batch size it passes
    at the defaults (``None``: the search's).

    Raises:
      ConfigError: naming ``hypermodel``, when fit never calls ``model.fit``, calls it more
        than once, or changes any of its arguments but ``batch_size`` (tpu_bo trains on the
        search's data, for its epochs).
    """
    run = build_and_fit(args, kwargs)

    def call(values: Mapping[str, Any]) -> dict[str, Any]:
        container = HyperParameters()
        container.merge(list(preset))
        container.values.update(values)
        calls = run(hypermodel, container)
        if len(calls) != 1:
            raise ConfigError(
                "hypermodel",
                f"{type(hypermodel).__name__}.fit calls model.fit {len(calls)} times; under "
                "tpu_bo it may only pass search's arguments to one model.fit call, with a "
                "batch_size of its own.",
            )
        got_args, got = calls[0]
        pairs = enumerate(zip(got_args, args, strict=False))
        changed = [f"argument {i}" for i, (a, b) in pairs if a is not b]
        if len(got_args) != len(args):
            changed.append("positional arguments")
        for key in {*got, *kwargs} - {"batch_size"}:
            if got.get(key) is not kwargs.get(key):
                changed.append(key)
        if changed:
            raise ConfigError(
                "hypermodel",
                f"{type(hypermodel).__name__}.fit changes model.fit's "
                f"{', '.join(sorted(changed))}, which tpu_bo cannot honour (each trial trains "
                "in its compiled loop on search's data and epochs); only batch_size may change.",
            )
        return got

    base = call({}).get("batch_size", kwargs.get("batch_size"))
    for d in _first_of_each(declarations):
        if not isinstance(d, (Int, Choice)):
            continue
        for alt in _alternatives(d):
            if alt == d.default or not isinstance(alt, int) or isinstance(alt, bool):
                continue
            got = call({d.name: alt}).get("batch_size")
            if got == alt and got != base:
                return d.name, None
    return "", None if base is None else int(base)


def _merge(
    d: HyperParameter, declarations: list[HyperParameter], definitions: dict[str, HyperParameter]
) -> None:
    known = definitions.get(d.name)
    if known is None:
        definitions[d.name] = d
    elif known.definition() != d.definition():
        raise ConfigError(
            "hypermodel",
            f"hyperparameter {d.name!r} is declared as {known!r} in one build and as {d!r} "
            "in another; give each declaration its own name.",
        )
    if not any(x.name == d.name and x.conditions == d.conditions for x in declarations):
        declarations.append(d.copy())


def _alternatives(d: HyperParameter) -> list[Any]:
    """The values discovery builds ``d`` at: every value of a Choice/Boolean, the ends of an
    Int's range (a loop's length, a threshold's sides)."""
    if isinstance(d, (Choice, Boolean)):
        return list(d.values)
    if isinstance(d, Int):
        grid = d.grid() or [d.min_value, d.max_value]
        return sorted({grid[0], grid[-1]})
    return []


# Probes: which hyperparameter the compiled optimizer holds; which float choice may be runtime.


def optimizer_feeds(
    hypermodel: Any, declarations: Sequence[HyperParameter], preset: Sequence[HyperParameter] = ()
) -> dict[str, str]:
    """KerasTuner name -> the compiled optimizer's hyperparameter whose value it is.

    Builds once at the defaults and once per float declaration (and numeric choice) with only
    its value changed; a hyperparameter of the compiled optimizer's config that changed to
    exactly that value is fed by it.
    """
    base = _optimizer_numbers(build_model(hypermodel, preset, {}))
    if not base:
        return {}
    feeds: dict[str, str] = {}
    for d in _first_of_each(declarations):
        alt = _other_value(d)
        if alt is None:
            continue
        try:
            numbers = _optimizer_numbers(build_model(hypermodel, preset, {d.name: alt}))
        except Exception:  # noqa: BLE001 - a value the function refuses says nothing
            continue
        for key in OPTIMIZER_NAMES:
            new, old = numbers.get(key), base.get(key)
            if key in feeds.values() or new is None or new == old:
                continue
            if math.isclose(new, alt, rel_tol=1e-5, abs_tol=1e-12):
                feeds[d.name] = key
                break
    return feeds


def build_model(
    hypermodel: Any, preset: Sequence[HyperParameter], values: Mapping[str, Any]
) -> Any:
    """The model ``hypermodel.build`` returns for ``values`` (defaults for the others)."""
    container = HyperParameters()
    container.merge(list(preset))
    container.values.update(values)
    return hypermodel.build(container)


def _optimizer_numbers(model: Any) -> dict[str, float]:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "get_config"):
        return {}
    config = optimizer.get_config()
    return {
        k: float(v)
        for k in OPTIMIZER_NAMES
        if isinstance(v := config.get(k), (int, float)) and not isinstance(v, bool)
    }


def _first_of_each(declarations: Sequence[HyperParameter]) -> list[HyperParameter]:
    seen: dict[str, HyperParameter] = {}
    for d in declarations:
        seen.setdefault(d.name, d)
    return list(seen.values())


def _other_value(d: HyperParameter) -> float | None:
    """A value of a float (or numeric choice) declaration other than its default."""
    if isinstance(d, Float) and d.sampling != "reverse_log":
        grid = d.grid()
        if grid:
            others = [v for v in grid if v != d.default]
            return others[len(others) // 2] if others else None
        lo, hi = d.min_value, d.max_value
        if lo == hi:
            return None
        mid = math.sqrt(lo * hi) if d.sampling == "log" else (lo + hi) / 2
        return mid if mid != d.default else (lo + 3 * hi) / 4
    if isinstance(d, Choice) and d.ordered:
        others = [v for v in d.values if v != d.default]
        return float(others[0]) if others else None
    return None


def runtime_choices(
    hypermodel: Any, space: Space, preset: Sequence[HyperParameter] = ()
) -> list[str]:
    """The float choices (``Float`` with a step, ``Choice`` of floats) that the model only hands
    to layers reading them at run time: one build with every runtime candidate as a
    :class:`tpu_bo.train.layers.RuntimeValue`, as the trainer's towers get them; a candidate the
    build reads as a number (:func:`tpu_bo.train.layers.read_as_number`) stays structural."""
    import tensorflow as tf

    from tpu_bo.train.layers import RuntimeValue, keras_layers_take_runtime_values, read_as_number

    candidates = [
        n
        for n, e in space.entries.items()
        if e.param is not None
        and not e.feeds
        and e.param.kind == "choice"
        and all(isinstance(c, float) for c in e.param.choices)
    ]
    if not candidates:
        return []
    floats = [
        n
        for n, e in space.entries.items()
        if e.param is not None and e.param.resolved_role == "runtime" and not e.feeds
    ]
    handles = {}
    for n in {*candidates, *floats}:
        entry = space.entries[n]
        handles[n] = RuntimeValue(entry.name, tf.Variable(float(entry.declaration.default)))
    while True:
        values = dict(handles)
        try:
            with keras_layers_take_runtime_values():
                build_model(hypermodel, preset, values)
            break
        except Exception as e:  # noqa: BLE001 - the user's function may raise anything
            found = read_as_number(e, list(handles.values()))
            if found is None:
                return []  # not about a runtime value: leave every choice structural
            blamed = next(n for n, h in handles.items() if h is found[0])
            del handles[blamed]
    return [n for n in candidates if n in handles]
