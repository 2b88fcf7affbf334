"""The compiled networks against PyTorch (an optional oracle): the same weights give the
same inference outputs, losses and gradients (every parameter and the input), in float64
to 1e-10 and float32 to 1e-4 relative. A small interpreter runs a cnnc forward graph with
torch.nn.functional; dropout masks come from cnnc's own generator (same seed and step)."""
import numpy as np
import pytest

import cnnc
from cnnc._kernels import dropout as dropout_kernels
from cnnc.autodiff import layer_seed
from cnnc.ops.conv import conv_pads, conv_transpose_geometry
from cnnc.ops.pool import pool_pads, pool_stride

from compiler_nets import NETS, batch_for

torch = pytest.importorskip("torch")
F = torch.nn.functional
torch.set_num_threads(1)  # tiny tensors: threads only add waiting

ACT = {"none": lambda x, a: x, "relu": lambda x, a: F.relu(x),
       "leaky_relu": lambda x, a: F.leaky_relu(x, a), "sigmoid": lambda x, a: torch.sigmoid(x),
       "tanh": lambda x, a: torch.tanh(x)}


def _dropout_mask(node, model, shape, dtype):
    ones = np.ones(shape, dtype)
    out = np.empty_like(ones)
    dropout_kernels.dropout_forward(ones, out, node.attrs.rate,
                                    layer_seed(node.name, model.seed), model.steps_done, 1)
    return torch.from_numpy(out)


def _pad(x, pads, value=0.0):
    top, bottom, left, right = pads
    return F.pad(x, (left, right, top, bottom), value=value)


def run_torch(model, params, x, training):
    """The output of ``model.graph`` on ``x`` computed by torch with ``params``."""
    env = {model.graph.inputs[0].name: x}
    for node in model.graph.nodes:
        ins = [env[v.name] for v in node.data_inputs]
        p = {k: params[v.name] for k, v in node.params.items()}
        a = node.attrs
        t = node.data_inputs[0].type
        if node.op == "conv":
            y = F.conv2d(_pad(ins[0], conv_pads(t, a)), p["weight"], p.get("bias"), a.stride,
                         0, a.dilation, a.groups)
            y = ACT[a.activation](y, a.activation_alpha)
        elif node.op == "conv_transpose":
            pads, extra = conv_transpose_geometry(a)
            assert pads[0] == pads[1] and pads[2] == pads[3]
            y = F.conv_transpose2d(ins[0], p["weight"], p.get("bias"), a.stride,
                                   (pads[0], pads[2]), extra)
            y = ACT[a.activation](y, a.activation_alpha)
        elif node.op == "dense":
            y = ins[0] @ p["weight"] + (p["bias"] if "bias" in p else 0)
            y = ACT[a.activation](y, a.activation_alpha)
        elif node.op in ("relu", "sigmoid", "tanh"):
            y = ACT[node.op](ins[0], 0.0)
        elif node.op == "leaky_relu":
            y = F.leaky_relu(ins[0], a.alpha)
        elif node.op == "softmax":
            y = torch.softmax(ins[0], dim=1)
        elif node.op == "maxpool":
            y = F.max_pool2d(_pad(ins[0], pool_pads(t, a), -float("inf")), a.size,
                             pool_stride(a), 0, 1, a.ceil_mode)
        elif node.op == "avgpool":
            pads = pool_pads(t, a)
            assert pads[0] == pads[1] and pads[2] == pads[3]
            y = F.avg_pool2d(ins[0], a.size, pool_stride(a), (pads[0], pads[2]), a.ceil_mode,
                             a.count_include_pad)
        elif node.op == "global_avgpool":
            y = ins[0].mean(dim=(2, 3), keepdim=a.keepdims)
        elif node.op == "flatten":
            y = ins[0].reshape(ins[0].shape[0], -1)
        elif node.op == "identity":
            y = ins[0]
        elif node.op == "upsample":
            y = ins[0].repeat_interleave(a.scale[0], 2).repeat_interleave(a.scale[1], 3)
        elif node.op == "add":
            y = sum(ins[1:], ins[0])
        elif node.op == "concat":
            y = torch.cat(ins, dim=1)
        elif node.op == "dropout":
            y = ins[0] * _dropout_mask(node, model, tuple(ins[0].shape), np.float64) \
                if training else ins[0]
        elif node.op == "batchnorm":
            y = F.batch_norm(ins[0], p["running_mean"].detach().clone(),
                             p["running_var"].detach().clone(), p.get("gamma"),
                             p.get("beta"), training and node.trainable, 1 - a.momentum,
                             a.epsilon)
        else:
            raise AssertionError(f"no torch version of {node.op}")
        env[node.output.name] = y
    return env[model.graph.outputs[0].name]


def torch_loss(model, out, y):
    if model.loss_name == "binary_crossentropy":
        t = torch.from_numpy(y.reshape(out.shape).astype(out.detach().numpy().dtype))
        return -(t * torch.log(out) + (1 - t) * torch.log(1 - out)).mean()
    if model.loss_name == "mse":
        return ((out - torch.from_numpy(y)) ** 2).mean()
    if model.loss_name == "mae":
        return (out - torch.from_numpy(y)).abs().mean()
    logp = torch.log(out)  # every categorical test net ends in softmax
    return F.nll_loss(logp, torch.from_numpy(y))


def close(a, b, rtol):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= rtol * max(np.abs(b).max(), 1e-30), np.abs(a - b).max()


def randomize_running_stats(model, rng):
    for name, arr in model.parameters.items():
        if name.endswith("running_mean"):
            arr[...] = rng.standard_normal(arr.shape) * 0.1
        elif name.endswith("running_var"):
            arr[...] = rng.uniform(0.5, 2.0, arr.shape)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-4)])
@pytest.mark.parametrize("name", list(NETS))
def test_same_outputs_and_gradients_as_pytorch(name, dtype, rtol):
    source, loss = NETS[name]
    model = cnnc.compile(source, dtype=dtype, seed=4, loss=loss)
    rng = np.random.default_rng(8)
    randomize_running_stats(model, rng)
    x, y = batch_for(model, 3, rng)
    x = x.astype(dtype)
    params = {k: torch.from_numpy(v.copy().astype(np.float64)).requires_grad_()
              for k, v in model.parameters.items()}
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()

    with torch.no_grad():
        expected = run_torch(model, params, xt, training=False)
    close(model.forward(x), expected.numpy(), rtol)

    out = run_torch(model, params, xt, training=True)
    tloss = torch_loss(model, out, y)
    tloss.backward()
    loss, grads = model.gradients(x, y, input_grad=True)
    assert loss == pytest.approx(tloss.item(), rel=rtol)
    for pname, grad in grads.items():
        ref = xt.grad if pname == model.graph.inputs[0].name else params[pname].grad
        close(grad, ref.numpy(), rtol)
