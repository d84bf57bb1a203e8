"""Every problem of a configuration at once, not only the first: a validation pass records each
:class:`~ailb.errors.ConfigError` and goes on with the default in place of the bad value, then
raises them together (:class:`~ailb.errors.ConfigErrors`; one alone is raised as itself). A
reload refused for five typos then says all five. Pure.

Granularity: each key of a section, each unknown key, each entry of a list or mapping
(deployments, aliases, keys, prices: the first problem of each entry, since an entry's later
checks depend on its earlier fields).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

from ailb.config.values import as_bool, as_choice, as_float, as_int, as_str
from ailb.errors import ConfigError, ConfigErrors

T = TypeVar("T")
P = ParamSpec("P")


class Problems:
    """The problems found so far in one validation pass."""

    def __init__(self) -> None:
        self._found: list[ConfigError] = []

    def add(self, exc: ConfigError) -> None:
        self._found.extend(exc.errors if isinstance(exc, ConfigErrors) else (exc,))

    def check(self, fallback: T, parse: Callable[P, T], *args: P.args,
              **kwargs: P.kwargs) -> T:
        """``parse(*args, **kwargs)``, or ``fallback`` once its ConfigError is recorded."""
        try:
            return parse(*args, **kwargs)
        except ConfigError as exc:
            self.add(exc)
            return fallback

    def each(self, items: Iterable[T], parse: Callable[[T], Any]) -> list[Any]:
        """``parse`` of every item, leaving out (and recording) the ones that fail."""
        out = []
        for item in items:
            try:
                out.append(parse(item))
            except ConfigError as exc:
                self.add(exc)
        return out

    @property
    def found(self) -> Sequence[ConfigError]:
        return tuple(self._found)

    def raise_any(self, ignore: tuple[type[ConfigError], ...] = ()) -> None:
        """Raises the one problem found, or ConfigErrors listing them all; returns if none
        (problems of the ``ignore`` types are not counted)."""
        found = [e for e in self._found if not isinstance(e, ignore)]
        if len(found) == 1:
            raise found[0]
        if found:
            raise ConfigErrors(found)


def section(problems: Problems, name: str, raw: Any, known: Iterable[str]) -> dict[str, Any]:
    """A mapping section with lower-cased keys; every unknown key is recorded (and left out),
    as is a section that is not a mapping (then empty: its defaults apply)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.add(ConfigError(name, "must be a mapping"))
        return {}
    known = sorted(known)
    lowered = {str(k).lower(): v for k, v in raw.items()}
    for key in sorted(set(lowered) - set(known)):
        problems.add(ConfigError(f"{name}.{key}",
                                 f"is not a known key (known: {', '.join(known)})"))
    return {k: v for k, v in lowered.items() if k in known}


class Fields:
    """One section's keys read one by one (``SECTION.key`` in errors); a bad value is recorded
    and its default used, so the next keys are still checked."""

    def __init__(self, problems: Problems, name: str, values: Mapping[str, Any],
                 defaults: Any) -> None:
        self._problems = problems
        self._name = name
        self._values = values
        self._defaults = defaults

    def _read(self, parse: Callable[..., T], key: str, *args: Any) -> T:
        default: T = getattr(self._defaults, key)
        return self._problems.check(default, parse, f"{self._name}.{key}",
                                    self._values.get(key, default), *args)

    def integer(self, key: str, lo: int, hi: int) -> int:
        return self._read(as_int, key, lo, hi)

    def number(self, key: str, lo: float, hi: float) -> float:
        return self._read(as_float, key, lo, hi)

    def flag(self, key: str) -> bool:
        return self._read(as_bool, key)

    def choice(self, key: str, allowed: Sequence[str]) -> str:
        return self._read(as_choice, key, allowed)

    def text(self, key: str) -> str:
        return self._read(as_str, key)
