"""``upsample``: nearest-neighbour upsampling of [N, C, H, W] by an integer factor per axis
(each pixel repeated scale_h x scale_w times). No MACs counted."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cnnc.ir.types import TensorType
from cnnc.ops.attrs import attr, pair_kind
from cnnc.ops.checks import expect_4d
from cnnc.ops.registry import OpDef, register_op


@dataclass(frozen=True)
class UpsampleAttrs:
    """Attributes of ``upsample``."""

    scale: tuple[int, int] = attr("integer factor for height and width", pair_kind(1), (2, 2))


def upsample_shape(ins: Sequence[TensorType], a: UpsampleAttrs) -> TensorType:
    """[N, C, H, W] -> [N, C, H * sh, W * sw]."""
    x = ins[0]
    expect_4d(x)
    return TensorType((x.shape[0], x.shape[1], int(x.shape[2]) * a.scale[0],
                       int(x.shape[3]) * a.scale[1]), x.dtype)


register_op(OpDef(
    name="upsample", attrs=UpsampleAttrs, positional=("scale",), arity=1,
    shape_rule=upsample_shape, doc="nearest-neighbour upsampling by an integer factor",
    aliases={"size": "scale", "scale_factor": "scale"},
))
