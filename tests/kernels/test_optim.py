"""cnnc._kernels.optim against numpy references of PyTorch's formulas and, if installed, torch."""
import numpy as np
import pytest

from cnnc._kernels import optim as O

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}
SIZES = [1, 2, 7, 127, 4099, 16397]   # the last spans three of the kernels' chunks
STEPS = 5


def sgd_ref(p, g, buf, t, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    g = g + weight_decay * p
    if momentum:
        buf[:] = g if t == 1 else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    p -= lr * g


def adam_ref(p, g, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
             decoupled=False):
    if decoupled:
        p *= 1 - lr * weight_decay
    else:
        g = g + weight_decay * p
    m[:] = beta1 * m + (1 - beta1) * g
    v[:] = beta2 * v + (1 - beta2) * g * g
    p -= lr / (1 - beta1 ** t) * m / (np.sqrt(v) / np.sqrt(1 - beta2 ** t) + eps)


def rmsprop_ref(p, g, sq, buf, gavg, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False):
    g = g + weight_decay * p
    sq[:] = alpha * sq + (1 - alpha) * g * g
    if centered:
        gavg[:] = alpha * gavg + (1 - alpha) * g
        d = np.sqrt(sq - gavg * gavg) + eps
    else:
        d = np.sqrt(sq) + eps
    if momentum > 0:
        buf[:] = momentum * buf + g / d
        p -= lr * buf
    else:
        p -= lr * g / d


CONFIGS = [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=0.05, momentum=0.9, weight_decay=1e-2)),
    ("sgd", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("adam", dict(lr=1e-2)),
    ("adam", dict(lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1)),
    ("adamw", dict(lr=1e-2, weight_decay=0.1)),
    ("rmsprop", dict(lr=1e-2)),
    ("rmsprop", dict(lr=1e-2, alpha=0.9, momentum=0.9, centered=True, weight_decay=1e-2)),
    ("rmsprop", dict(lr=1e-3, momentum=0.5)),
]


def run_ours(kind, hp, p, grads, n_threads=None):
    """Run len(grads) steps of our kernel on p (in place)."""
    st = [np.zeros_like(p) for _ in range(3)]
    for t, g in enumerate(grads, 1):
        if kind == "sgd":
            O.sgd_step(p, g, st[0], step=t, n_threads=n_threads, **hp)
        elif kind in ("adam", "adamw"):
            fn = O.adam_step if kind == "adam" else O.adamw_step
            fn(p, g, st[0], st[1], step=t, n_threads=n_threads, **hp)
        else:
            O.rmsprop_step(p, g, st[0], st[1], st[2], n_threads=n_threads, **hp)
    return p


def run_ref(kind, hp, p, grads):
    st = [np.zeros_like(p) for _ in range(3)]
    for t, g in enumerate(grads, 1):
        if kind == "sgd":
            sgd_ref(p, g, st[0], t, **hp)
        elif kind in ("adam", "adamw"):
            adam_ref(p, g, st[0], st[1], t, decoupled=kind == "adamw",
                     **{"weight_decay": 1e-2, **hp} if kind == "adamw" else hp)
        else:
            rmsprop_ref(p, g, st[0], st[1], st[2], **hp)
    return p


def problem(rng, n, dtype):
    p = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(STEPS)]
    return p, grads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind,hp", CONFIGS)
def test_updates_match_numpy_reference(kind, hp, n, dtype):
    rng = np.random.default_rng(1)
    p, grads = problem(rng, n, dtype)
    ours = run_ours(kind, hp, p.copy(), grads)
    want = run_ref(kind, hp, p.astype(np.float64), [g.astype(np.float64) for g in grads])
    np.testing.assert_allclose(ours, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,hp", CONFIGS)
def test_updates_match_torch_optim(kind, hp, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    p, grads = problem(rng, 33, dtype)
    ours = run_ours(kind, hp, p.copy(), grads)
    tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
    hp = dict(hp)
    if "beta1" in hp:
        hp["betas"] = (hp.pop("beta1"), hp.pop("beta2"))
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "rmsprop": torch.optim.RMSprop}[kind]([tp], **hp)
    for g in grads:
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours, tp.detach().numpy(), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_norm_and_clipping(dtype):
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(n).astype(dtype) for n in (1, 7, 4099, 10007)]
    norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    assert O.global_norm(grads) == pytest.approx(norm, rel=1e-12)
    assert O.sum_squares(grads[2]) == pytest.approx((grads[2].astype(float) ** 2).sum(),
                                                    rel=1e-12)
    before = [g.copy() for g in grads]
    assert O.clip_by_global_norm(grads, 2 * norm) == pytest.approx(norm)  # no clipping
    for a, b in zip(grads, before):
        np.testing.assert_array_equal(a, b)
    assert O.clip_by_global_norm(grads, 1.0) == pytest.approx(norm)
    factor = dtype(1.0 / (norm + 1e-6))
    for a, b in zip(grads, before):
        np.testing.assert_array_equal(a, factor * b)
    assert O.global_norm(grads) == pytest.approx(1.0, rel=1e-5)


def test_clipping_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    grads = [rng.standard_normal(n) * 3 for n in (5, 300)]
    params = [torch.nn.Parameter(torch.zeros(g.size, dtype=torch.float64)) for g in grads]
    for tp, g in zip(params, grads):
        tp.grad = torch.from_numpy(g.copy())
    tnorm = torch.nn.utils.clip_grad_norm_(params, 2.5)
    assert O.clip_by_global_norm(grads, 2.5) == pytest.approx(float(tnorm), rel=1e-12)
    for tp, g in zip(params, grads):
        np.testing.assert_allclose(g, tp.grad.numpy(), rtol=1e-12)


def test_one_and_two_threads_are_bitwise_equal():
    rng = np.random.default_rng(5)
    p, grads = problem(rng, 300_007, np.float32)
    for kind, hp in CONFIGS:
        one = run_ours(kind, hp, p.copy(), grads[:2], n_threads=1)
        two = run_ours(kind, hp, p.copy(), grads[:2], n_threads=2)
        np.testing.assert_array_equal(one, two)
    assert O.sum_squares(p, n_threads=1) == O.sum_squares(p, n_threads=2)


def test_bad_inputs_raise_value_error():
    p = np.ones(5, np.float32)
    g, m, v = np.ones(5, np.float32), np.zeros(5, np.float32), np.zeros(5, np.float32)
    bad = [
        lambda: O.sgd_step(p, g, None, lr=0.1, momentum=0.9),          # buffer missing
        lambda: O.sgd_step(p, g, m, lr=0.1, nesterov=True),             # nesterov, momentum 0
        lambda: O.sgd_step(p, g, m, lr=0.1, momentum=0.9, nesterov=True, dampening=0.1),
        lambda: O.sgd_step(p, p, None, lr=0.1),                         # grad aliases param
        lambda: O.sgd_step(p.reshape(5, 1), g.reshape(5, 1), None, lr=0.1),
        lambda: O.sgd_step(p, g.astype(np.float64), None, lr=0.1),
        lambda: O.adam_step(p, g, m, v, step=0),
        lambda: O.adam_step(p, g, m, m, step=1),                        # states alias
        lambda: O.adam_step(p, g, m, v, step=1, beta1=1.0),
        lambda: O.adamw_step(p, g, m, np.zeros(4, np.float32), step=1),
        lambda: O.rmsprop_step(p, g, v, None, None, centered=True),     # grad_avg missing
        lambda: O.clip_by_global_norm([g], 0.0),
        lambda: O.sgd_step(p, g, m, lr=-0.1, momentum=0.9),
        lambda: O.rmsprop_step(p, g, v, alpha=-0.5),
    ]
    for call in bad:
        with pytest.raises(ValueError):
            call()


@pytest.mark.parametrize("dtype", DTYPES)
def test_bound_sgd_reads_lr_and_step_when_called(dtype):
    """sgd_bind's call, with the learning rate and step changed between calls, matches
    sgd_step; a bad lr or step in the arrays is refused at the call, bad arrays at binding."""
    rng = np.random.default_rng(6)
    p, grads = problem(rng, 4099, dtype)
    hp = dict(momentum=0.9, weight_decay=1e-3, nesterov=True)
    q, buf, qb = p.copy(), np.zeros_like(p), np.zeros_like(p)
    g = np.empty_like(p)
    lr, step = np.zeros(1), np.zeros(1, np.int64)
    call = O.sgd_bind(p, g, buf, lr, step, **hp)
    for t, grad in enumerate(grads, start=1):
        g[:] = grad
        lr[0], step[0] = 0.1 / t, t
        call()
        O.sgd_step(q, grad, qb, lr=0.1 / t, step=t, **hp)
        np.testing.assert_array_equal(p, q)
    for lr[0], step[0] in ((-0.1, 1), (np.nan, 1), (0.1, 0)):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError, match="lr"):
        O.sgd_bind(p, g, buf, np.zeros(1, np.float32), step, **hp)
    with pytest.raises(ValueError, match="step"):
        O.sgd_bind(p, g, buf, lr, np.zeros(2, np.int64), **hp)
    with pytest.raises(ValueError):
        O.sgd_bind(p, p, buf, lr, step, **hp)  # grad aliases param
