"""Where a level, branch or one-shot run starts, and the argument checks of the lottery
modules (shared by :mod:`~rigl_tf.lottery.imp` and :mod:`~rigl_tf.lottery.branches`,
which import this module and never each other the other way round)."""

import dataclasses
import math
from typing import Any, Dict, Optional

import numpy as np


def _fail(name, value, allowed):
    raise ValueError(f"`{name}` must be {allowed}, got {value!r}.")


def check_int(name, value, minimum=0, allow_none=False):
    """``value`` as an int >= ``minimum`` (or None if allowed); else ValueError naming it."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        _fail(name, value, f"an int >= {minimum}")
    return int(value)


def check_float(name, value, low=None, high=None, low_open=False, high_open=False,
                allow_none=False):
    """``value`` as a finite float in the given range; else ValueError naming it."""
    if value is None and allow_none:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    ok = not isinstance(value, bool) and math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        _fail(name, value, "a finite number " + " and ".join(s for s in (lo, hi) if s))
    return v


def check_choice(name, value, allowed):
    """``value`` if it is in ``allowed``; else ValueError listing the allowed values."""
    if value not in allowed:
        _fail(name, value, f"one of {', '.join(repr(a) for a in allowed)}")
    return value


@dataclasses.dataclass
class Start:
    """Where a level, branch or one-shot run starts.

    Attributes:
      masks: 'layer/attr' -> 0/1 mask of every prunable weight.
      weights: Keras variable path -> starting value (masked weights already masked);
        masks are not included.
      start_step: the optimizer's first step (the schedule position).
      end_step: the step training stops at (``end_step - start_step`` steps are run).
      data_seed: seed of the data order.
      constant_lr: a constant learning rate overriding the schedule (fine-tuning).
      width_multiplier: for small-dense models, the width multiplier of the network.
      info: extra facts recorded in ``metrics.json``.
    """

    masks: Dict[str, np.ndarray]
    weights: Dict[str, np.ndarray]
    start_step: int
    end_step: int
    data_seed: int
    constant_lr: Optional[float] = None
    width_multiplier: Optional[float] = None
    info: Dict[str, Any] = dataclasses.field(default_factory=dict)


__all__ = ["Start", "check_choice", "check_float", "check_int"]
