"""What differs between the transformers releases toolrl supports (`transformers>=5.0,<6`).

transformers renamed a causal LM forward's KV-cache argument and output from `past_key_values`
to `cache` (the old name warns and is removed in 5.40). These helpers use whichever name the
installed release's forward declares, so the same call works before and after the rename.
"""

from __future__ import annotations

import inspect
from functools import cache as memoize


def cache_kwarg(model) -> str:
    """The name under which `model`'s forward takes a KV cache: `cache` or `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    return _cache_kwarg_of(type(base))


@memoize
def _cache_kwarg_of(model_class: type) -> str:
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def output_cache(output):
    """The KV cache a forward returned (`output.cache`, or `output.past_key_values` before)."""
    found = output.get("cache") if hasattr(output, "get") else None
    return found if found is not None else output.past_key_values
