"""``upsample``: nearest-neighbour upsampling of [N, C, H, W] by an integer factor per axis
(each pixel repeated scale_h x scale_w times). No MACs counted. Backward: the internal
``upsample_backward`` sums each scale_h x scale_w block of dy."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cnnc._kernels import conv as _conv

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


@dataclass(frozen=True)
class UpsampleGradAttrs:
    """Attributes of ``upsample_backward``: the factor and the forward input's (C, H, W)."""

    scale: tuple[int, int]
    x_chw: tuple[int, int, int]


def upsample_kernel(node, ctx) -> Callable[[], None]:
    """y = each pixel repeated scale times per axis."""
    return _conv.upsample_nearest2d_forward(ctx.array(node.inputs[0]), ctx.array(node.output),
                                            node.attrs.scale, ctx.n_threads, bind=True)


def upsample_vjp(gb, node, douts) -> list:
    """dx = block sums of dy."""
    x = node.inputs[0]
    if not gb.needs(x):
        return [None]
    a = UpsampleGradAttrs(node.attrs.scale, tuple(int(d) for d in x.type.shape[1:]))
    return [gb.emit("upsample_backward", [douts[0]], a, "dx").outputs[0]]


def upsample_backward_shape(ins: Sequence[TensorType], a: UpsampleGradAttrs) -> TensorType:
    """dy -> dx of the forward input's type."""
    return TensorType((ins[0].shape[0],) + a.x_chw, ins[0].dtype)


def upsample_backward_kernel(node, ctx) -> Callable[[], None]:
    """dx = block sums of dy."""
    return _conv.upsample_nearest2d_backward(ctx.array(node.inputs[0]), ctx.array(node.output),
                                             node.attrs.scale, ctx.n_threads, bind=True)


register_op(OpDef(
    name="upsample", attrs=UpsampleAttrs, positional=("scale",), arity=1,
    shape_rule=upsample_shape, doc="nearest-neighbour upsampling by an integer factor",
    aliases={"size": "scale", "scale_factor": "scale"},
    kernel=upsample_kernel, vjp=upsample_vjp,
))
register_op(OpDef(
    name="upsample_backward", attrs=UpsampleGradAttrs, positional=(), arity=1,
    shape_rule=upsample_backward_shape, doc="gradient of upsample (block sums of dy)",
    internal=True, kernel=upsample_backward_kernel,
))
