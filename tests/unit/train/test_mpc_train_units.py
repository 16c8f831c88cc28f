"""The pieces of MPC training, on real CrypTen in one process (world size 1, no network):
the MLP twin's gradients, the batched span softmax, shared Adam, the inverse square root it
needs, the wrap-around guard, and one twin step per generator against plaintext."""

from __future__ import annotations

import math

import pytest
import torch

from smpc_synth.crypten_backend.compat import import_crypten
from smpc_synth.data.layout import Layout, Span
from smpc_synth.errors import SmpcSynthError
from smpc_synth.models.spans import activate
from smpc_synth.train.mpc.guard import MAX_RETRIES, WrapGuard

crypten = import_crypten()
pytestmark = pytest.mark.usefixtures("crypten_patches")

LAYOUT = Layout(
    (
        Span("x", 0, 1, "continuous"),
        Span("x", 1, 3, "onehot"),
        Span("y", 4, 1, "continuous"),
        Span("c", 5, 2, "onehot"),
        Span("d", 7, 5, "onehot"),
    )
)


LSB = 2.0**-16  # CrypTen's fixed-point resolution


@pytest.fixture(scope="module")
def mpc():
    torch.set_num_threads(1)
    crypten.init()
    yield crypten
    crypten.uninit()


def test_mlp_twin_gradients_match_torch_autograd(mpc):
    from smpc_synth.models.nets import mlp
    from smpc_synth.train.mpc.nn import Mlp, ParameterVector, named_parameters

    torch.manual_seed(0)
    net = mlp(6, (16, 8), 3, "leaky_relu")
    x = torch.randn(32, 6)
    upstream = torch.randn(32, 3) * 0.1
    (net(x) * upstream).sum().backward()
    params = ParameterVector(named_parameters({"net": net}))
    twin = Mlp(net, params, "net")
    out = twin.forward(mpc.cryptensor(x))
    torch.testing.assert_close(out.get_plain_text(), net(x).detach(), atol=5e-3, rtol=0)
    twin.backward(mpc.cryptensor(upstream))
    for name, slot in params.slots.items():
        expected = dict(net.named_parameters())[name.split(".", 1)[1]].grad
        got = params.grads[name].get_plain_text().reshape(slot.shape)
        torch.testing.assert_close(got, expected, atol=5e-3, rtol=0.02, msg=name)


def test_span_activation_and_its_backward_match_torch(mpc):
    from smpc_synth.mpc.primitives.spans import Activation, SpanMap

    g = torch.Generator().manual_seed(1)
    raw = (torch.randn(40, LAYOUT.width, generator=g) * 3).requires_grad_(True)
    upstream = torch.randn(40, LAYOUT.width, generator=g)
    expected = activate(raw, LAYOUT)
    (expected * upstream).sum().backward()
    act = Activation(SpanMap(LAYOUT))
    got = act.forward(mpc.cryptensor(raw.detach())).get_plain_text()
    torch.testing.assert_close(got, expected.detach(), atol=0.01, rtol=0)
    grad = act.backward(mpc.cryptensor(upstream)).get_plain_text()
    torch.testing.assert_close(grad, raw.grad, atol=0.02, rtol=0.02)


@pytest.mark.parametrize("growth", [1.3, 40.0, 1e4])
def test_inverse_sqrt_converges_cold_and_from_a_warm_start_however_x_grew(mpc, growth):
    from smpc_synth.train.mpc.optim import EPS, X_MAX, inverse_sqrt

    x = torch.logspace(math.log10(EPS), math.log10(X_MAX), 60)
    cold = inverse_sqrt(mpc.cryptensor(x)).root
    # 5% where fixed point can tell, else a few units of its last place (2^-16)
    torch.testing.assert_close(cold.get_plain_text(), x.rsqrt(), atol=LSB * 8, rtol=0.05)
    grown = (x * growth).clamp(max=X_MAX)
    warm = inverse_sqrt(mpc.cryptensor(grown), cold).root
    torch.testing.assert_close(warm.get_plain_text(), grown.rsqrt(), atol=LSB * 8, rtol=0.05)


def test_bucket_start_is_within_half_a_bucket_of_the_root(mpc):
    from smpc_synth.train.mpc.optim import BUCKET_BASE, EPS, X_MAX, bucket_start

    x = torch.logspace(math.log10(EPS) + 0.01, math.log10(X_MAX) - 0.01, 200)
    ratio = bucket_start(mpc.cryptensor(x))[0].get_plain_text() / x.rsqrt()
    # sqrt of half a bucket's ratio, plus fixed point's rounding of the smallest roots
    bound = BUCKET_BASE**0.25 * 1.03
    assert float(ratio.max()) < bound and float(ratio.min()) > 1 / bound, ratio


@pytest.mark.parametrize(("growth", "iters"), [(1.02, 1), (1.15, 2), (0.95, 1), (5.0, 1)])
def test_steady_inverse_sqrt_tracks_x_and_restarts_when_it_jumps(mpc, growth, iters):
    from smpc_synth.train.mpc.optim import EPS, X_MAX, steady_inverse_sqrt

    x = torch.logspace(math.log10(EPS), math.log10(X_MAX / 10), 60)
    new = x * growth  # 5x: beyond SAFE_GROWTH, so the careful restarts must take over
    got = steady_inverse_sqrt(
        mpc.cryptensor(new), mpc.cryptensor(x.rsqrt()), mpc.cryptensor(x), iters
    ).root
    # 2%: x = EPS is 26 units of fixed point, so x itself is only known to 2%
    torch.testing.assert_close(got.get_plain_text(), new.rsqrt(), atol=LSB * 8, rtol=0.02)


@pytest.mark.parametrize("steps", [6, 40])  # 40: most steps take the steady path
def test_shared_adam_follows_torch_adam(mpc, steps):
    from smpc_synth.train.mpc.optim import AdamSettings, SharedAdam

    g = torch.Generator().manual_seed(2)
    start = torch.randn(500, generator=g) * 0.1
    scales = torch.logspace(-3, 1, 500)
    plain = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([plain], lr=1e-3, weight_decay=1e-5)
    shared = SharedAdam(AdamSettings(lr=1e-3, weight_decay=1e-5), 500)
    params = mpc.cryptensor(start)
    for _ in range(steps):
        grad = torch.randn(500, generator=g) * scales
        plain.grad = grad.clone()
        opt.step()
        params = shared.step(params, mpc.cryptensor(grad))
    moved = (plain.detach() - start).abs().max()
    gap = (params.get_plain_text() - plain.detach()).abs().max()
    assert gap < 0.25 * moved, (float(gap), float(moved))


def test_adam_root_check_passes_normal_steps_and_flags_a_wrapped_root(mpc):
    """The sum of x y^2 over Newton's last step (no extra product) is about 1 per element on
    every normal step; a wrap-around inside the iteration puts it far off, even where the
    root that comes out looks tame."""
    from smpc_synth.train.mpc.optim import AdamSettings, SharedAdam

    g = torch.Generator().manual_seed(4)
    scales = torch.logspace(-3, 1, 300)
    shared = SharedAdam(AdamSettings(lr=1e-3), 300)
    params = mpc.cryptensor(torch.zeros(300))
    errors = []
    for _ in range(30):  # the cold start, the warm-up and the steady state
        params = shared.step(params, mpc.cryptensor(torch.randn(300, generator=g) * scales))
        errors.append(shared.root_check_error(shared.root_check.get_plain_text().tolist()))
    assert max(errors) < 0.2, errors
    # one element of the previous root wrapped around (a truncation failure: 2^48 units)
    root = shared.inv_root
    root.share[7] += 2**48  # world size 1: the only share
    params = shared.step(params, mpc.cryptensor(torch.randn(300, generator=g) * scales))
    assert shared.root_check_error(shared.root_check.get_plain_text().tolist()) > 1e3


def test_guard_rolls_back_a_failed_health_check_and_records_no_checks(caplog):
    from smpc_synth.train.mpc.guard import CHECK_PREFIX, losses_only

    state = {"value": 0, "fail": True}

    def step(i: int) -> dict[str, float]:
        state["value"] += 1
        failed = i == 2 and state.pop("fail", False)
        return {"loss": 1.0 + i, f"{CHECK_PREFIX}adam": 5e4 if failed else 1e-3}

    guard = WrapGuard()
    results = guard.run_steps(4, step, lambda: state["value"], lambda v: state.update(value=v))
    assert guard.rollbacks == 1 and state["value"] == 4
    assert [losses_only(r) for r in results] == [{"loss": 1.0 + i} for i in range(4)]
    assert "step 3 looks wrapped around (loss 3, check:adam 5e+04): rolled back to step 2" in (
        caplog.text
    )
    assert guard.is_bad({"loss": 1.0, f"{CHECK_PREFIX}x": float("nan")})
    assert not guard.is_bad({"loss": 1.0, f"{CHECK_PREFIX}x": 0.9})


def test_adam_clamps_a_second_moment_that_drifted_below_zero(mpc):
    """Truncation errors random-walk v below 0 where gradients stay 0; x = v + EPS < 0
    would make 1/sqrt diverge and the parameter jump. Every V_CLAMP_EVERY steps v >= 0."""
    from smpc_synth.train.mpc.optim import EPS, V_CLAMP_EVERY, AdamSettings, SharedAdam

    shared = SharedAdam(AdamSettings(lr=1e-3), 4)
    shared.t = V_CLAMP_EVERY - 1  # the next step clamps
    shared.m = mpc.cryptensor(torch.full((4,), 0.1))
    shared.v = mpc.cryptensor(torch.tensor([-3 * EPS, -1.5 * EPS, 0.0, 1.0]))
    params = shared.step(mpc.cryptensor(torch.zeros(4)), mpc.cryptensor(torch.zeros(4)))
    assert (shared.v.get_plain_text() >= 0).all()
    assert float(shared.inv_root.get_plain_text().max()) <= EPS**-0.5 * 1.05
    # a bounded Adam step: lr * m / sqrt(EPS) at most
    assert float(params.get_plain_text().abs().max()) <= 1e-3 * 0.1 * EPS**-0.5 * 1.05


@pytest.mark.parametrize("generator", ["vae", "gan"])
def test_twin_step_matches_the_plaintext_step(mpc, generator):
    from smpc_synth.models import get_generator
    from smpc_synth.train.mpc.twins import TWINS

    params = {"hidden": (32, 32), "latent_dim": 8, "batch_size": 60}
    if generator == "gan":
        params = {"generator_hidden": (32,), "discriminator_hidden": (32,), "noise_dim": 8}
        params.update(batch_size=60, pac=6)
    g = torch.Generator().manual_seed(3)
    X = activate(torch.randn(60, LAYOUT.width, generator=g), LAYOUT)
    plain = get_generator(generator)(LAYOUT, **params)
    model = get_generator(generator)(LAYOUT, **params)
    plain.initialize(7)
    model.initialize(7)
    twin = TWINS[generator](model)
    released = model.released_modules[0]
    start = {k: v.clone() for k, v in plain.modules()[released].state_dict().items()}
    shared = mpc.cryptensor(X)
    rng_plain, rng_twin = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    from smpc_synth.train.mpc.guard import losses_only

    for _ in range(3):
        expected = plain.train_step(X, rng_plain)
        revealed = twin.step(shared, rng_twin)
        got = losses_only(revealed)
        checks = {k: v for k, v in revealed.items() if k not in got}
        assert len(checks) == len(twin.opts) and max(checks.values()) < 1, checks
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert math.isclose(got[key], value, rel_tol=0.03, abs_tol=0.02), (key, got, expected)
    twin.reveal_released(0)
    for (name, a), b in zip(
        model.modules()[released].state_dict().items(),
        plain.modules()[released].state_dict().values(),
    ):
        # Adam moves every weight by about lr per step whatever its gradient's size, so
        # weights whose gradient is within fixed-point noise of 0 may go either way: compare
        # the mean gap with the distance moved
        moved = float((b - start[name]).abs().mean())
        gap = float((a - b).abs().mean())
        assert gap < 0.25 * moved, (name, gap, moved)


@pytest.mark.parametrize(("recon_weight", "tolerance"), [(2.0, 0.15), (0.0, 0.03)])
def test_vae_twin_gradients_match_autograd_in_every_network(mpc, recon_weight, tolerance):
    """The first step's gradient of every parameter, the encoder's included (its chain
    through the reparametrisation and the bounded log-variance is written by hand), against
    torch autograd on the same batch and noise; without the reconstruction term, the KL
    term's chain alone. The encoder's output is scaled up so the log-variance spans its
    bounded range. CrypTen's exp and tanh move z by about 1%, which flips a few LeakyReLU
    derivatives: about 10% in norm below the decoder's output layer; the KL term alone is
    within 2% (dropping tanh's derivative from its constant term makes that 5%)."""
    from smpc_synth.models import get_generator
    from smpc_synth.models.losses import kl_divergence, reconstruction_loss
    from smpc_synth.models.vae import bounded_logvar
    from smpc_synth.train.mpc.twins import TWINS

    params = {"hidden": (32, 32), "latent_dim": 8, "batch_size": 60, "recon_weight": recon_weight}
    X = activate(torch.randn(60, LAYOUT.width, generator=torch.Generator().manual_seed(3)), LAYOUT)
    plain, model = (get_generator("vae")(LAYOUT, **params) for _ in range(2))
    for vae in (plain, model):
        vae.initialize(7)
        with torch.no_grad():
            vae.modules()["encoder"][-1].weight.mul_(8.0)
    hp, nets = plain.hparams, plain.modules()
    out = nets["encoder"](X)
    mu, logvar = out[:, : hp.latent_dim], bounded_logvar(out[:, hp.latent_dim :], hp.logvar_bound)
    noise = torch.Generator().manual_seed(9)
    z = mu + torch.randn(mu.shape, generator=noise) * (0.5 * logvar).exp()
    raw = nets["decoder"](z)
    sigma = plain.buffers["sigma"]
    recon = reconstruction_loss(raw, X, plain.layout, plain._continuous, sigma)
    (hp.recon_weight * recon + hp.kl_weight * kl_divergence(mu, logvar)).backward()

    twin = TWINS["vae"](model)
    captured = {}
    adam = twin.opts["vae"]
    take_step = adam.step

    def capture(flat, grad):
        captured["grad"] = grad.get_plain_text()
        return take_step(flat, grad)

    adam.step = capture
    twin.step(mpc.cryptensor(X), torch.Generator().manual_seed(9))
    for name, slot in twin.params["vae"].slots.items():
        net, key = name.split(".", 1)
        want = dict(nets[net].named_parameters())[key].grad
        got = captured["grad"][slot.start : slot.stop].view(slot.shape)
        if not want.any():  # the decoder, without a reconstruction term
            assert float(got.abs().max()) < 1e-3, name
            continue
        # the encoder's output rows: mu's and the log-variance's chains apart
        parts = got.split(hp.latent_dim) if got.size(0) == 2 * hp.latent_dim else (got,)
        for part, (got_part, want_part) in enumerate(zip(parts, want.split(len(parts[0])))):
            error = float((got_part - want_part).norm() / want_part.norm())
            assert error < tolerance, (name, part, error)


def test_guard_rolls_back_a_wrapped_step_and_redoes_it():
    state = {"value": 0, "poisoned": {3}}

    def step(i: int) -> dict[str, float]:
        state["value"] += 1
        if i in state["poisoned"]:
            state["poisoned"].discard(i)
            return {"loss": 3e12}  # what a truncation wrap-around looks like
        return {"loss": 1.0 + i}

    guard = WrapGuard()
    results = guard.run_steps(6, step, lambda: state["value"], lambda v: state.update(value=v))
    assert [r["loss"] for r in results] == [1.0 + i for i in range(6)]
    assert guard.rollbacks == 1
    assert state["value"] == 6  # the rolled-back steps did not count


def test_guard_rewinds_what_accepted_steps_did_when_it_rolls_back():
    # one step per epoch: step 2's update wrecks the weights, step 3's loss shows it, and
    # the epoch record step 2 wrote must go with the rollback to before step 2
    state = {"weights": 0, "wreck": True, "history": []}

    def step(i: int) -> dict[str, float]:
        if state["weights"] < 0:
            return {"loss": 3e12}
        loss = 1.0 + i
        state["weights"] += 1
        if i == 2 and state["wreck"]:
            state["wreck"], state["weights"] = False, -(2**40)
        return {"loss": loss}

    def snapshot():
        return state["weights"], len(state["history"])

    def restore(point) -> None:
        state["weights"] = point[0]
        del state["history"][point[1] :]

    guard = WrapGuard()
    accepted = lambda i, losses: state["history"].append((i, losses["loss"]))  # noqa: E731
    guard.run_steps(5, step, snapshot, restore, accepted)
    assert state["history"] == [(i, 1.0 + i) for i in range(5)]
    assert state["weights"] == 5 and guard.rollbacks == 1


def test_guard_gives_up_when_the_loss_stays_out_of_range():
    guard = WrapGuard()
    with pytest.raises(SmpcSynthError, match="rollbacks"):
        # step 2 always wraps: redoing step 1 succeeds every time, which must not reset the count
        guard.run_steps(
            4, lambda i: {"loss": float("nan") if i == 2 else 1.0}, lambda: None, lambda _: None
        )
    assert guard.rollbacks == MAX_RETRIES + 1


def test_guard_flags_a_jump_far_above_recent_losses():
    guard = WrapGuard()
    for value in (10.0, 9.0, 8.5, 8.0, 7.9, 7.5):
        assert not guard.is_bad({"loss": value})
        guard.accept({"loss": value})
    assert guard.is_bad({"loss": 5e3})
    assert not guard.is_bad({"loss": 20.0})


def test_split_powers_of_two_is_exact_at_and_between_the_powers(mpc):
    from smpc_synth.mpc.primitives.functions import split_powers_of_two

    x = torch.tensor([1.0, 1.5, 2.0 - LSB, 2.0, 3.9, 4.0, 40.0, 41.0, 64.0, 100.0, 200.0])
    powers = torch.tensor([0, 0, 1, 1, 1, 1, 5, 5, 5, 7, 7])  # each within [1, 2^(J+1)]
    k, inverse = split_powers_of_two(mpc.cryptensor(x.view(1, -1)), powers, None)
    expected = torch.minimum(torch.floor(torch.log2(x)), powers.float())
    assert torch.equal(k.get_plain_text().view(-1), expected)
    assert torch.equal(inverse.get_plain_text().view(-1), 2.0**-expected)  # exact: no rounding


def test_reduced_reciprocal_and_log_match_torch_on_spans_of_any_width(mpc):
    """The range-reduced path (here with CrypTen's comparison) on per-position bounds, with
    a numerator gathered by index, as the span softmax calls it."""
    from smpc_synth.mpc.primitives.functions import reciprocal_and_log_in_range

    g = torch.Generator().manual_seed(5)
    widths = torch.tensor([2.0, 8.0, 41.0, 200.0, 4096.0])
    sums = 1 + torch.rand(8, 5, generator=g) * (widths - 1)
    index = torch.tensor([0, 1, 1, 2, 3, 3, 3, 4])
    numerator = torch.rand(8, len(index), generator=g)
    q, log = reciprocal_and_log_in_range(
        mpc.cryptensor(sums), 1.0, widths, None, numerator=mpc.cryptensor(numerator), index=index
    )
    torch.testing.assert_close(q.get_plain_text(), numerator / sums[:, index], atol=6e-5, rtol=3e-4)
    torch.testing.assert_close(log.get_plain_text(), sums.log(), atol=3e-4, rtol=0)


def test_adam_moves_gradients_too_large_for_fixed_point_into_its_window(mpc):
    """Gradients of 3,000 (up to 8,500): at the starting scale their squares are 1e10,
    beyond the inverse square root's range, and the root check fails; each shrink of the
    scale divides the squares by 16 until every element is in the window (the mean alone
    passes while a few still are not), and the steps are then torch Adam's within fixed
    point's bound (see :mod:`smpc_synth.train.mpc.optim`)."""
    from smpc_synth.train.mpc.optim import (
        EPS,
        GRAD_SCALE,
        ROOT_ERROR_UNITS,
        SCALE_STEP,
        STEP_ERROR_UNITS,
        X_MAX,
        AdamSettings,
        SharedAdam,
    )

    lr = 1e-3
    g = torch.Generator().manual_seed(6)
    grads = [torch.randn(60, generator=g) * 3000 for _ in range(3)]
    shared = SharedAdam(AdamSettings(lr=lr), 60)
    start = mpc.cryptensor(torch.zeros(60))
    state = shared.state()
    shrinks = 0
    while True:
        params = shared.step(start, mpc.cryptensor(grads[0]))
        if shared.root_check_error(shared.root_check.get_plain_text().tolist()) <= 1:
            break
        shared.load(state)  # what the guard's rollback does, then the twin shrinks
        assert shared.shrink_scale()
        shrinks += 1
    scale = GRAD_SCALE / SCALE_STEP**shrinks
    assert shrinks >= 1 and shared.grad_scale == scale
    # the first scale that fits the largest gradient: one shrink fewer would not
    largest = float(grads[0].abs().max())
    assert (largest * scale) ** 2 <= X_MAX < (largest * scale * SCALE_STEP) ** 2
    plain = torch.zeros(60, requires_grad=True, dtype=torch.float64)
    opt = torch.optim.Adam([plain], lr=lr)
    lr_error = abs(round(lr / LSB) * LSB / lr - 1)  # lr as fixed point encodes it
    bound = torch.zeros(60, dtype=torch.float64)
    for t, grad in enumerate(grads, 1):
        if t > 1:
            params = shared.step(params, mpc.cryptensor(grad))
        before = plain.detach().clone()
        plain.grad = grad.double()
        opt.step()
        v_hat = opt.state[plain]["exp_avg_sq"] / (1 - 0.999**t)
        x = v_hat * scale**2 + EPS  # what the root is taken of: in [EPS, X_MAX]
        assert float(x.max()) <= X_MAX
        step = (plain.detach() - before).abs()
        bound += step * (lr_error + ROOT_ERROR_UNITS * LSB * x.sqrt()) + STEP_ERROR_UNITS * LSB
    gap = (params.get_plain_text().double() - plain.detach()).abs()
    assert bool((gap <= bound).all()), (gap / bound).max()
    # a rollback to a state from before the shrink keeps the lower scale
    shared.load(state)
    assert shared.grad_scale == scale
    assert SharedAdam(AdamSettings(lr=lr), 60).grad_scale == GRAD_SCALE


@pytest.mark.parametrize("path", ["cold", "warm", "steady"])
def test_adam_root_check_flags_one_element_beyond_the_window(mpc, path):
    """One element of 400 above X_MAX moves the mean of x y^2 by far less than the
    tolerance, yet the check fails on every path the root can take, so the optimizer
    shrinks its scale; at X_MAX itself it passes."""
    from smpc_synth.train.mpc.optim import EPS, SAFE_GROWTH, X_MAX, AdamSettings, SharedAdam

    g = torch.Generator().manual_seed(11)
    x = torch.logspace(math.log10(EPS) + 1, math.log10(X_MAX) - 0.5, 400)
    x = x[torch.randperm(400, generator=g)]
    at = int(torch.randint(400, (1,), generator=g))
    t = {"cold": 0, "warm": 1, "steady": 100}[path]
    errors = {}
    for name, top in (("at", X_MAX * 0.999), ("above", X_MAX * 1.5)):
        shared = SharedAdam(AdamSettings(lr=1e-3), 400, grad_scale=1)
        shared.t = t  # the step taken next is t + 1
        previous = x.clone()
        previous[at] = top / SAFE_GROWTH * 1.05  # within the steady path's growth
        if t:
            shared.inv_root = mpc.cryptensor(previous.rsqrt())
            shared.last_x = mpc.cryptensor(previous)
        wanted = x.clone()
        wanted[at] = top
        shared.v = mpc.cryptensor(wanted - EPS)
        # a gradient equal to v's square root keeps v where it is, whatever its weight
        shared.step(mpc.cryptensor(torch.zeros(400)), mpc.cryptensor((wanted - EPS).sqrt()))
        errors[name] = shared.root_check_error(shared.root_check.get_plain_text().tolist())
    assert errors["at"] <= 1 < errors["above"], errors
