"""Convolutions: ``conv`` (2-D, grouped/depthwise, dilated) and ``conv_transpose``.

Layout: input NCHW; conv weight OIHW = [filters, in_channels / groups, kh, kw];
conv_transpose weight [in_channels, filters, kh, kw] (PyTorch's layout: the OIHW weight of
the convolution it transposes). An activation may be fused into the layer (``activation``).

Kernels: ``cnnc._kernels.conv``. Backward (internal ops): the data gradient of a conv is
``conv_backward_data`` (the transpose of its im2col GEMM), its weight and bias gradients
``conv_backward_weight``; conv_transpose has the mirror pair. A fused activation is undone
first by ``act_backward`` on the layer's output. In inference a 3x3 conv followed by a 2x2
max-pool may become the internal ``conv_maxpool`` (passes.fuse): one kernel pass, no conv
output in memory.

MACs count the multiply-accumulates of the products only (no bias), per image, as
torchvision's ``_ops`` figures do.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cnnc._kernels import conv as _conv

from cnnc.ir.types import TensorType
from cnnc.ops.attrs import BOOL, PADDING, WeightedLayerOptions, attr, int_kind, pair_kind
from cnnc.ops.checks import expect_4d
from cnnc.ops.activation import unfuse_activation
from cnnc.ops.registry import OpDef, ParamSpec, RuleError, register_op
from cnnc.ops.window import Pads, output_hw, resolve_pads, transpose_output_size

# Spellings a Keras or PyTorch user would type, mapped to cnnc's field names.
CONV_ALIASES = {
    "kernel_size": "kernel", "strides": "stride", "pad": "padding",
    "dilation_rate": "dilation", "use_bias": "bias", "out_channels": "filters",
}


@dataclass(frozen=True)
class ConvAttrs(WeightedLayerOptions):
    """Attributes of ``conv``."""

    filters: int = attr("number of output channels", int_kind(1))
    kernel: tuple[int, int] = attr("kernel height and width", pair_kind(1))
    stride: tuple[int, int] = attr("step between windows", pair_kind(1), (1, 1))
    padding: str | Pads = attr("'valid' (none), 'same' (TF/Keras: output ceil(H/stride), "
                               "extra pixel at bottom/right) or explicit pads", PADDING,
                               "valid")
    dilation: tuple[int, int] = attr("spacing between kernel taps", pair_kind(1), (1, 1))
    groups: int = attr("channel groups; groups = in channels makes it depthwise",
                       int_kind(1), 1)
    bias: bool = attr("add a learned per-channel bias", BOOL, True)


def conv_pads(t: TensorType, a: ConvAttrs) -> Pads:
    """The explicit (top, bottom, left, right) pads of ``conv`` on an input of type t."""
    return resolve_pads(a.padding, (int(t.shape[2]), int(t.shape[3])), a.kernel, a.stride,
                        a.dilation)


def conv_shape(ins: Sequence[TensorType], a: ConvAttrs) -> TensorType:
    """[N, C, H, W] -> [N, filters, H', W'] with the window formula per axis."""
    x = ins[0]
    expect_4d(x)
    c = int(x.shape[1])
    if c % a.groups:
        raise RuleError(f"has groups={a.groups}, which does not divide its {c} input "
                        "channels", inputs=(0,))
    if a.filters % a.groups:
        raise RuleError(f"has groups={a.groups}, which does not divide its {a.filters} "
                        "filters", hint="make filters a multiple of groups")
    oh, ow = output_hw((int(x.shape[2]), int(x.shape[3])), a.kernel, a.stride,
                       conv_pads(x, a), a.dilation)
    return TensorType((x.shape[0], a.filters, oh, ow), x.dtype)


def conv_params(ins: Sequence[TensorType], a: ConvAttrs) -> dict[str, ParamSpec]:
    """weight [filters, C / groups, kh, kw] (glorot_uniform), bias [filters] (zeros)."""
    c = int(ins[0].shape[1])
    params = {"weight": ParamSpec((a.filters, c // a.groups) + a.kernel, "glorot_uniform")}
    if a.bias:
        params["bias"] = ParamSpec((a.filters,), "zeros")
    return params


def conv_macs(ins: Sequence[TensorType], out: TensorType, a: ConvAttrs) -> int:
    """H' * W' * filters * (C / groups) * kh * kw."""
    c = int(ins[0].shape[1])
    return out.numel() * (c // a.groups) * a.kernel[0] * a.kernel[1]


@dataclass(frozen=True)
class ConvTransposeAttrs(WeightedLayerOptions):
    """Attributes of ``conv_transpose``."""

    filters: int = attr("number of output channels", int_kind(1))
    kernel: tuple[int, int] = attr("kernel height and width", pair_kind(1))
    stride: tuple[int, int] = attr("upsampling step", pair_kind(1), (1, 1))
    padding: str | Pads = attr("'valid' (no crop), 'same' (output H * stride, as Keras) or "
                               "pads cropped from the output (as PyTorch)", PADDING, "valid")
    output_padding: tuple[int, int] = attr("extra rows/columns at the bottom/right, "
                                           "< stride", pair_kind(0), (0, 0))
    bias: bool = attr("add a learned per-channel bias", BOOL, True)


def conv_transpose_geometry(a: ConvTransposeAttrs) -> tuple[Pads, tuple[int, int]]:
    """Explicit (top, bottom, left, right) crops and output padding of ``conv_transpose``.

    'same' crops k - stride (the odd one at the bottom/right, mirroring SAME_UPPER); when
    the kernel is smaller than the stride it adds stride - k rows instead.
    """
    if a.padding == "valid":
        return (0, 0, 0, 0), a.output_padding
    if a.padding != "same":
        return a.padding, a.output_padding  # type: ignore[return-value]
    if a.output_padding != (0, 0):
        raise RuleError("cannot combine padding='same' with output_padding",
                        hint="use explicit padding with output_padding")
    pads: list[int] = []
    extra: list[int] = []
    for k, s in zip(a.kernel, a.stride):
        total = k - s
        lo = max(total, 0) // 2
        pads += [lo, max(total, 0) - lo]
        extra.append(max(-total, 0))
    return (pads[0], pads[1], pads[2], pads[3]), (extra[0], extra[1])


def conv_transpose_shape(ins: Sequence[TensorType], a: ConvTransposeAttrs) -> TensorType:
    """[N, C, H, W] -> [N, filters, (H - 1) * s + k - pads + output_padding, ...]."""
    x = ins[0]
    expect_4d(x)
    for op, s in zip(a.output_padding, a.stride):
        if op >= s:
            raise RuleError(f"has output_padding {a.output_padding}, which must be smaller "
                            f"than the stride {a.stride}")
    pads, extra = conv_transpose_geometry(a)
    oh = transpose_output_size(int(x.shape[2]), a.kernel[0], a.stride[0], pads[0], pads[1],
                               extra[0])
    ow = transpose_output_size(int(x.shape[3]), a.kernel[1], a.stride[1], pads[2], pads[3],
                               extra[1])
    return TensorType((x.shape[0], a.filters, oh, ow), x.dtype)


def conv_transpose_params(ins: Sequence[TensorType], a: ConvTransposeAttrs
                          ) -> dict[str, ParamSpec]:
    """weight [C, filters, kh, kw] (glorot_uniform), bias [filters] (zeros)."""
    c = int(ins[0].shape[1])
    params = {"weight": ParamSpec((c, a.filters) + a.kernel, "glorot_uniform")}
    if a.bias:
        params["bias"] = ParamSpec((a.filters,), "zeros")
    return params


def conv_transpose_macs(ins: Sequence[TensorType], out: TensorType,
                        a: ConvTransposeAttrs) -> int:
    """Every input pixel scatters a kh x kw x filters patch: H * W * C * filters * kh * kw."""
    return ins[0].numel() * a.filters * a.kernel[0] * a.kernel[1]




@dataclass(frozen=True)
class ConvGradAttrs:
    """Geometry shared by the backward ops of conv and conv_transpose: explicit pads, the
    forward input's (C, H, W) and the weight's shape. ``output_padding`` is 0 for conv."""

    stride: tuple[int, int]
    pads: Pads
    dilation: tuple[int, int]
    groups: int
    x_chw: tuple[int, int, int]
    w_shape: tuple[int, int, int, int]
    bias: bool
    output_padding: tuple[int, int] = (0, 0)


def _chw(t: TensorType) -> tuple[int, int, int]:
    return (int(t.shape[1]), int(t.shape[2]), int(t.shape[3]))


def conv_grad_attrs(node) -> ConvGradAttrs:
    """The backward geometry of a conv or conv_transpose node."""
    a = node.attrs
    x = node.data_inputs[0].type
    w = tuple(node.params["weight"].type.shape)
    if node.op == "conv":
        return ConvGradAttrs(a.stride, conv_pads(x, a), a.dilation, a.groups, _chw(x), w,
                             a.bias)
    pads, extra = conv_transpose_geometry(a)
    return ConvGradAttrs(a.stride, pads, (1, 1), 1, _chw(x), w, a.bias, extra)


def grad_data_shape(ins: Sequence[TensorType], a: ConvGradAttrs) -> TensorType:
    """(dy, weight) -> dx of the forward input's type."""
    return TensorType((ins[0].shape[0],) + a.x_chw, ins[0].dtype)


def grad_weight_shape(ins: Sequence[TensorType], a: ConvGradAttrs) -> tuple[TensorType, ...]:
    """(x, dy) -> (dweight, dbias) or (dweight,)."""
    dw = TensorType(a.w_shape, ins[0].dtype)
    return (dw, TensorType((int(ins[1].shape[1]),), ins[0].dtype)) if a.bias else (dw,)


def _stride(ctx, value) -> int:
    """The plan's worker stride in elements of ``value``'s dtype."""
    return ctx.worker_stride // np.dtype(value.type.dtype).itemsize


def _bias(node, ctx):
    b = node.params.get("bias")
    return ctx.array(b) if b is not None else None


def conv_kernel(node, ctx) -> Callable[[], None]:
    """y = act(conv2d(x, w) + b) on the plan's views. Inference keeps Winograd's
    transformed weights from step to step, until the parameters change."""
    a = node.attrs
    x = node.data_inputs[0]
    call = _conv.conv2d_forward(
        ctx.array(x), ctx.array(node.params["weight"]), _bias(node, ctx),
        ctx.array(node.output), a.stride, conv_pads(x.type, a), a.dilation, a.groups,
        a.activation, a.activation_alpha, ctx.workspace(node), ctx.n_threads, bind=True,
        keep_weights=ctx.mode == "infer", worker_stride=_stride(ctx, x))
    if call.keeps_weights:
        ctx.on_params_changed(call.weights_changed)
    return call


def conv_maxpool_shape(ins: Sequence[TensorType], a: ConvAttrs) -> TensorType:
    """The conv's output type with height and width halved (rounded down)."""
    y = conv_shape(ins, a)
    return TensorType(y.shape[:2] + (int(y.shape[2]) // 2, int(y.shape[3]) // 2), y.dtype)


def conv_maxpool_macs(ins: Sequence[TensorType], out: TensorType, a: ConvAttrs) -> int:
    """The conv's MACs (as if it computed its whole output, as the layer it replaces)."""
    return conv_macs(ins, conv_shape(ins, a), a)


def conv_maxpool_pays(conv, pool) -> bool:
    """Whether ``conv`` (a node) followed by ``pool`` (the maxpool reading its output) runs
    faster as one ``conv_maxpool``: 3x3 stride-1 ungrouped conv, 2x2 stride-2 floor-mode
    pool without padding, and a layer the kernel's pooled path pays for."""
    from cnnc.ops.pool import pool_pads, pool_stride
    a, p = conv.attrs, pool.attrs
    x, y = conv.data_inputs[0].type, conv.output.type
    if not (a.kernel == (3, 3) and a.stride == (1, 1) and a.dilation == (1, 1)
            and a.groups == 1 and p.size == (2, 2) and pool_stride(p) == (2, 2)
            and not p.ceil_mode and pool_pads(y, p) == (0, 0, 0, 0)):
        return False
    w = tuple(conv.params["weight"].type.shape)
    return _conv.conv2d_maxpool_pays((1,) + tuple(int(d) for d in x.shape[1:]), w,
                                     conv_pads(x, a))


def conv_maxpool_kernel(node, ctx) -> Callable[[], None]:
    """y = maxpool2x2(act(conv2d(x, w) + b)) in one pass, the transformed weights kept
    until the parameters change (inference only)."""
    a = node.attrs
    x = node.data_inputs[0]
    call = _conv.conv2d_maxpool_forward(
        ctx.array(x), ctx.array(node.params["weight"]), _bias(node, ctx),
        ctx.array(node.output), conv_pads(x.type, a), a.activation, a.activation_alpha,
        ctx.workspace(node), ctx.n_threads, bind=True, keep_weights=True)
    if call.keeps_weights:
        ctx.on_params_changed(call.weights_changed)
    return call


def conv_maxpool_workspace(node, batch: int, worker_stride: int = 0) -> int:
    """Scratch of the pooled path."""
    from cnnc.threads import get_num_threads
    x = node.data_inputs[0].type
    elems = _conv.conv2d_maxpool_workspace_size(x.with_batch(batch).shape,
                                                node.params["weight"].type.shape,
                                                conv_pads(x, node.attrs), get_num_threads())
    return _elems_to_bytes(elems, x.dtype)


def _elems_to_bytes(elems: int, dtype: str) -> int:
    return int(elems) * np.dtype(dtype).itemsize


def conv_workspace(node, batch: int, worker_stride: int = 0) -> int:
    """Scratch of the conv2d kernels of a conv node or its gradient (0 for 1x1 and
    depthwise), with the workers' parts ``worker_stride`` bytes apart where the path
    takes it."""
    return _scratch_bytes(_conv.conv2d_workspace_size, node, batch, worker_stride)


def conv_worker_scratch(node, batch: int) -> int:
    """Bytes of scratch each worker thread of the conv2d kernels of a conv node or its
    gradient needs at a fixed stride."""
    return _scratch_bytes(_conv.conv2d_worker_scratch, node, batch)


def _scratch_bytes(size_rule, node, batch: int, worker_stride: int | None = None) -> int:
    """A conv2d size rule (elements) in bytes, for a conv node or its gradient."""
    from cnnc.threads import get_num_threads
    a = node.attrs
    if node.op == "conv":
        x = node.data_inputs[0].type
        geometry = (x.with_batch(batch).shape, node.params["weight"].type.shape, a.stride,
                    conv_pads(x, a), a.dilation, a.groups)
    else:
        geometry = ((batch,) + a.x_chw, a.w_shape, a.stride, a.pads, a.dilation, a.groups)
    itemsize = np.dtype(node.inputs[0].type.dtype).itemsize
    extra = () if worker_stride is None else (worker_stride // itemsize,)
    return int(size_rule(*geometry, get_num_threads(), *extra)) * itemsize


def conv_transpose_grad_workspace(node, batch: int, worker_stride: int = 0) -> int:
    """Scratch of a conv_transpose gradient op: its forward's, from its recorded geometry."""
    from cnnc.threads import get_num_threads
    a = node.attrs
    elems = _conv.conv_transpose2d_workspace_size((batch,) + a.x_chw, a.w_shape, a.stride,
                                                  a.pads, a.output_padding, a.dilation,
                                                  a.groups, get_num_threads())
    return _elems_to_bytes(elems, node.inputs[0].type.dtype)


def conv_backward_data_kernel(node, ctx) -> Callable[[], None]:
    """dx = conv2d's data gradient of dy by w."""
    a = node.attrs
    dy, w = node.inputs
    return _conv.conv2d_backward_data(
        ctx.array(dy), ctx.array(w), ctx.array(node.output), a.stride, a.pads, a.dilation,
        a.groups, ctx.workspace(node), ctx.n_threads, bind=True,
        worker_stride=_stride(ctx, dy))


def conv_backward_weight_kernel(node, ctx) -> Callable[[], None]:
    """dw (and db) = conv2d's weight (and bias) gradient from x and dy."""
    a = node.attrs
    x, dy = node.inputs
    db = ctx.array(node.outputs[1]) if a.bias else None
    return _conv.conv2d_backward_weight(
        ctx.array(x), ctx.array(dy), ctx.array(node.outputs[0]), db, a.stride, a.pads,
        a.dilation, a.groups, False, ctx.workspace(node), ctx.n_threads, bind=True,
        worker_stride=_stride(ctx, x))


def conv_transpose_kernel(node, ctx) -> Callable[[], None]:
    """y = act(conv_transpose2d(x, w) + b) on the plan's views."""
    a = node.attrs
    pads, extra = conv_transpose_geometry(a)
    return _conv.conv_transpose2d_forward(
        ctx.array(node.data_inputs[0]), ctx.array(node.params["weight"]), _bias(node, ctx),
        ctx.array(node.output), a.stride, pads, extra, 1, 1, a.activation,
        a.activation_alpha, ctx.workspace(node), ctx.n_threads, bind=True)


def conv_transpose_workspace(node, batch: int, worker_stride: int = 0) -> int:
    """Scratch of conv_transpose's forward kernel."""
    from cnnc.threads import get_num_threads
    a = node.attrs
    x = node.data_inputs[0].type
    pads, extra = conv_transpose_geometry(a)
    elems = _conv.conv_transpose2d_workspace_size(x.with_batch(batch).shape,
                                                  node.params["weight"].type.shape,
                                                  a.stride, pads, extra, 1, 1,
                                                  get_num_threads())
    return _elems_to_bytes(elems, x.dtype)


def conv_transpose_backward_data_kernel(node, ctx) -> Callable[[], None]:
    """dx = conv_transpose2d's data gradient (a conv2d of dy by w)."""
    a = node.attrs
    dy, w = node.inputs
    return _conv.conv_transpose2d_backward_data(
        ctx.array(dy), ctx.array(w), ctx.array(node.output), a.stride, a.pads,
        a.output_padding, a.dilation, a.groups, ctx.workspace(node), ctx.n_threads,
        bind=True)


def conv_transpose_backward_weight_kernel(node, ctx) -> Callable[[], None]:
    """dw (and db) of conv_transpose2d from x and dy."""
    a = node.attrs
    x, dy = node.inputs
    db = ctx.array(node.outputs[1]) if a.bias else None
    return _conv.conv_transpose2d_backward_weight(
        ctx.array(x), ctx.array(dy), ctx.array(node.outputs[0]), db, a.stride, a.pads,
        a.output_padding, a.dilation, a.groups, False, ctx.workspace(node), ctx.n_threads,
        bind=True)


def _conv_vjp(gb, node, douts, data_op: str, weight_op: str) -> list:
    """Shared by conv and conv_transpose: undo the fused activation, then the data
    gradient (only if needed) and the weight/bias gradients (only if trained)."""
    dy = unfuse_activation(gb, node, douts[0])
    a = conv_grad_attrs(node)
    x = node.data_inputs[0]
    w = node.params["weight"]
    grads = [None] * len(node.inputs)
    if gb.needs(x):
        grads[0] = gb.emit(data_op, [dy, w], a, "dx").outputs[0]
    if gb.needs(w):
        wnode = gb.emit(weight_op, [x, dy], a, "dweight")
        for i, out in enumerate(wnode.outputs):
            grads[1 + i] = out
    return grads


def conv_vjp(gb, node, douts) -> list:
    """dx by conv_backward_data, dw/db by conv_backward_weight."""
    return _conv_vjp(gb, node, douts, "conv_backward_data", "conv_backward_weight")


def conv_transpose_vjp(gb, node, douts) -> list:
    """dx by conv_transpose_backward_data, dw/db by conv_transpose_backward_weight."""
    return _conv_vjp(gb, node, douts, "conv_transpose_backward_data",
                     "conv_transpose_backward_weight")


register_op(OpDef(
    name="conv", attrs=ConvAttrs, positional=("filters", "kernel"), arity=1,
    shape_rule=conv_shape, param_rule=conv_params, mac_rule=conv_macs,
    doc="2-D convolution over NCHW (OIHW weights), with stride, padding, dilation, groups",
    aliases=CONV_ALIASES, kernel=conv_kernel, workspace=conv_workspace,
    worker_scratch=conv_worker_scratch, vjp=conv_vjp,
))
register_op(OpDef(
    name="conv_maxpool", attrs=ConvAttrs, positional=(), arity=1,
    shape_rule=conv_maxpool_shape, param_rule=conv_params, mac_rule=conv_maxpool_macs,
    doc="conv then a 2x2 stride-2 max-pool in one pass (inference's fusion, see passes.fuse)",
    internal=True, kernel=conv_maxpool_kernel, workspace=conv_maxpool_workspace,
))
register_op(OpDef(
    name="conv_transpose", attrs=ConvTransposeAttrs, positional=("filters", "kernel"),
    arity=1, shape_rule=conv_transpose_shape, param_rule=conv_transpose_params,
    mac_rule=conv_transpose_macs,
    doc="transposed 2-D convolution (learned upsampling), the gradient of conv w.r.t. input",
    aliases={k: v for k, v in CONV_ALIASES.items() if v != "dilation"},
    kernel=conv_transpose_kernel, workspace=conv_transpose_workspace, vjp=conv_transpose_vjp,
))
for _name, _shape, _kernel in (
        ("conv_backward_data", grad_data_shape, conv_backward_data_kernel),
        ("conv_backward_weight", grad_weight_shape, conv_backward_weight_kernel),
        ("conv_transpose_backward_data", grad_data_shape,
         conv_transpose_backward_data_kernel),
        ("conv_transpose_backward_weight", grad_weight_shape,
         conv_transpose_backward_weight_kernel)):
    _t = _name.startswith("conv_transpose")
    register_op(OpDef(
        name=_name, attrs=ConvGradAttrs, positional=(), arity=2, shape_rule=_shape,
        doc=f"{_name.replace('_', ' ')} (inputs: {'dy, weight' if 'data' in _name else 'x, dy'})",
        internal=True, kernel=_kernel,
        workspace=conv_transpose_grad_workspace if _t else conv_workspace,
        worker_scratch=None if _t else conv_worker_scratch,
    ))
