"""Reduce the token activations of each unit of a document to one vector.

Vectorised over units and dimensions: the members of all units are gathered into one
``(m, d)`` tensor and reduced per unit with ``index_add_`` / ``scatter_reduce_``, so the cost
is a few kernels per document whatever the number of units.
"""

from __future__ import annotations

import numpy as np
import torch

from raypipe.granularity.kinds import Aggregation
from raypipe.granularity.units import Units

# Sums and means of low-precision activations accumulate in float32, then are cast back.
_ACCUMULATE_IN_FLOAT32 = (torch.float16, torch.bfloat16)


def aggregate(activations: torch.Tensor, units: Units, aggregation: Aggregation) -> torch.Tensor:
    """One vector per unit: ``(t, d)`` token activations of one document -> ``(u, d)``.

    The result has the dtype and device of ``activations``. A unit with one member gets exactly
    (bit for bit) that token's vector, whatever the aggregation. ``SIGNED_MAX`` keeps, per
    dimension, the value of largest magnitude with its sign (ties go to the positive value).
    """
    aggregation = Aggregation.parse(aggregation)
    if activations.dim() != 2:
        raise ValueError(
            f"activations must be (t, d) for one document, got shape {tuple(activations.shape)}; "
            "concatenate the document's windows along the token axis first"
        )
    if not activations.is_floating_point():
        raise ValueError(f"activations must be floating point, got {activations.dtype}")
    t, d = activations.shape
    device = activations.device
    u = len(units)
    if u == 0:
        return activations.new_empty((0, d))

    flat, sizes = units.packed()  # (m,), (u,)
    if (sizes == 0).any():
        raise ValueError(
            f"unit {int(np.argmax(sizes == 0))} has no member token; every unit needs at least one"
        )
    if flat.min() < 0 or flat.max() >= t:
        raise ValueError(
            f"units reference token positions {int(flat.min())}..{int(flat.max())} but the "
            f"document has {t} activation rows; build the units and the activations from the "
            "same tokens (padding removed)"
        )
    index = torch.from_numpy(flat).to(device)  # (m,)
    if (sizes == 1).all():  # tokens as units: a plain gather, exact and one kernel
        return activations.index_select(0, index)
    unit_of = torch.from_numpy(np.repeat(np.arange(u, dtype=np.int64), sizes)).to(device)  # (m,)
    gathered = activations.index_select(0, index)  # (m, d)

    if aggregation in (Aggregation.SUM, Aggregation.MEAN):
        work = torch.float32 if activations.dtype in _ACCUMULATE_IN_FLOAT32 else activations.dtype
        out = torch.zeros((u, d), dtype=work, device=device).index_add_(0, unit_of, gathered.to(work))
        if aggregation is Aggregation.MEAN:
            out /= torch.from_numpy(sizes).to(device=device, dtype=work).unsqueeze(1)
        out = out.to(activations.dtype)
    elif aggregation is Aggregation.MAX:
        out = _segment_extreme(gathered, unit_of, u, "amax")
    elif aggregation is Aggregation.MIN:
        out = _segment_extreme(gathered, unit_of, u, "amin")
    elif aggregation is Aggregation.SIGNED_MAX:
        high = _segment_extreme(gathered, unit_of, u, "amax")
        low = _segment_extreme(gathered, unit_of, u, "amin")
        out = torch.where(high.abs() >= low.abs(), high, low)
    else:
        raise AssertionError(f"unhandled aggregation {aggregation!r}")

    # 0 + x or x / 1 can turn -0.0 into 0.0: copy single-token units exactly.
    single = np.flatnonzero(sizes == 1)
    if single.size:
        token = flat[np.cumsum(sizes)[single] - 1]  # the one member of each single-token unit
        out[torch.from_numpy(single).to(device)] = activations[torch.from_numpy(token).to(device)]
    return out


def _segment_extreme(gathered: torch.Tensor, unit_of: torch.Tensor, u: int, reduce: str) -> torch.Tensor:
    """Per-unit ``amax``/``amin`` of ``gathered`` (m, d) rows grouped by ``unit_of`` (m,) -> (u, d)."""
    out = gathered.new_zeros((u, gathered.shape[1]))
    target = unit_of.unsqueeze(1).expand_as(gathered)
    return out.scatter_reduce_(0, target, gathered, reduce=reduce, include_self=False)
