"""A registered loss or estimator takes the settings it needs from the algorithm config itself.

The maths stays in pure functions with explicit keyword arguments (tested by hand, callable
without a config). `with_config(fn, config)` fills every keyword-only argument of `fn` whose
name is a field of `config`, so the trainer calls whichever function the recipe names without
knowing which knobs it has: a new loss is one function plus one registry line, and its knobs are
fields of `AlgorithmConfig` of the same names.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any


def with_config(fn: Callable[..., Any], config: Any) -> Callable[..., Any]:
    """`fn` with its keyword-only arguments that `config` (a dataclass) has a field for filled in."""
    parameters = inspect.signature(fn).parameters
    fields = {f.name for f in dataclasses.fields(config)}
    settings = {
        name: getattr(config, name)
        for name, p in parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name in fields
    }
    return functools.partial(fn, **settings)


def config_fields_read(fn: Callable[..., Any], config: Any) -> list[str]:
    """The names of `config`'s fields that `with_config(fn, config)` passes (for docs and tests)."""
    return sorted(with_config(fn, config).keywords)
