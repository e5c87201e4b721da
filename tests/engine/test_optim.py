"""airbench's optimizer pieces: decoupled Nesterov SGD beside AdamW, per-tower and normalisation learning rates,
and the lookahead. Each against its definition."""
import pytest
import torch

from bench.clip.loss import ClipLoss
from bench.engine import compact_embedding
from bench.engine.build import build_engine
from bench.engine.lookahead import Lookahead, averaged_tensors
from bench.engine.optim import MixedAdamW, build_optimizer, nesterov_sgdw_, param_groups
from bench.engine.recipe import TrainRecipe
from bench.engine.train_step import clip_step
from tests.support.models import CPU, batch, prompt_tables, run_steps, tiny_clip


def gradient_sequence(shape, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(n)]


@pytest.mark.parametrize("momentum", [0.0, 0.85, 0.9])
@pytest.mark.parametrize("tensor_lr", [False, True])
def test_nesterov_sgdw_is_torch_sgd_after_decoupled_decay(momentum, tensor_lr):
    """The step equals decay by (1 - lr wd), then torch's Nesterov SGD at lr (1 - m), over 6 steps of changing
    lr; a float or a device-tensor lr (CUDA graphs) give the same numbers."""
    ours = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = torch.nn.Parameter(ours.clone())
    buffer = torch.zeros_like(ours)
    wd = 0.05
    for i, grad in enumerate(gradient_sequence(ours.shape, 6)):
        lr = 0.3 / (i + 1)
        nesterov_sgdw_([ours], [grad], [buffer], torch.tensor(lr, dtype=torch.float64) if tensor_lr else lr,
                       momentum, wd)
        with torch.no_grad():
            ref.mul_(1 - lr * wd)
        if i == 0:
            sgd = torch.optim.SGD([ref], lr=lr * (1 - momentum), momentum=momentum, nesterov=momentum > 0)
        sgd.param_groups[0]["lr"] = lr * (1 - momentum)
        ref.grad = grad.clone()
        sgd.step()
        assert torch.allclose(ours, ref.detach(), rtol=1e-13, atol=1e-15), i


def test_sgd_step_size_does_not_depend_on_the_momentum():
    """The decoupling: under a constant gradient the step tends to lr x gradient whatever the momentum (torch's
    SGD would take 1 / (1 - m) times that)."""
    grad = torch.full((3,), 2.0, dtype=torch.float64)
    for momentum in (0.5, 0.85, 0.95):
        p, buffer = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
        for _ in range(2000):
            before = p.clone()
            nesterov_sgdw_([p], [grad], [buffer], 0.1, momentum, 0.0)
        assert torch.allclose(before - p, 0.1 * grad, rtol=1e-9), momentum


def test_groups_split_the_towers_and_scale_only_the_vision_norm_steps():
    """Vision tower at lr, its BatchNorm parameters at lr x scale with wd / scale (same decay per step), the
    rest (text tower, token embedding, temperature) at the text lr and decay; every parameter once."""
    model = tiny_clip()
    groups = param_groups(model, TrainRecipe(lr=0.5, weight_decay=0.01, norm_lr_scale=16, text_lr=2e-3,
                                             text_weight_decay=0.05, optimizer="sgd"))
    vision, norm, text = groups
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    visual = {id(p) for p in model.visual.parameters()}
    bn = {id(p) for m in model.visual.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert {id(p) for p in norm["params"]} == bn and bn
    assert {id(p) for p in vision["params"]} == visual - bn
    assert id(model.logit_scale) in {id(p) for p in text["params"]} and not {id(p) for p in text["params"]} & visual
    assert (vision["lr"], norm["lr"], text["lr"]) == (0.5, 8.0, 2e-3)
    assert norm["lr"] * norm["weight_decay"] == pytest.approx(vision["lr"] * vision["weight_decay"])
    assert vision["sgd"] and norm["sgd"] and "sgd" not in text
    # nothing asked for: the reference recipe's single group, so its optimizer and checkpoints are unchanged
    assert len(param_groups(model, TrainRecipe(lr=1e-4, weight_decay=0.01))) == 1


def test_mixed_optimizer_steps_adamw_groups_as_torch_adamw_and_sgd_groups_as_defined():
    """Through a real CLIP step: the text tower's parameters equal torch.optim.AdamW's bit for bit, the vision
    tower's equal nesterov_sgdw_ applied to the same gradients."""
    model, twin = tiny_clip(), tiny_clip()
    groups = param_groups(model, TrainRecipe(lr=0.2, weight_decay=0.01, text_lr=1e-3, text_weight_decay=0.1,
                                             optimizer="sgd", momentum=0.9))
    mixed = MixedAdamW(groups, lr=0.2, weight_decay=0.01)
    adamw = torch.optim.AdamW([p for p in twin.parameters() if not any(p is q for q in twin.visual.parameters())],
                              lr=1e-3, weight_decay=0.1)
    buffers = {n: torch.zeros_like(p) for n, p in twin.visual.named_parameters()}
    tokens = prompt_tables()[1]
    from bench.clip.loss import ClipLoss
    from bench.engine.train_step import clip_features

    for i in range(3):
        images, labels, ids = batch(seed=20 + i)
        for m in (model, twin):
            m.zero_grad(set_to_none=True)
            image_features, text_features = clip_features(m, images, tokens, ids)
            ClipLoss("clip")(image_features, text_features, m.clamped_logit_scale(), labels).backward()
        mixed.step()
        adamw.step()
        with torch.no_grad():
            for name, p in twin.visual.named_parameters():
                nesterov_sgdw_([p], [p.grad], [buffers[name]], 0.2, 0.9, 0.01)
    ours, ref = model.state_dict(), twin.state_dict()
    for name in ours:
        if name.startswith("visual."):
            assert torch.allclose(ours[name], ref[name], rtol=1e-12, atol=1e-15), name
        else:
            assert torch.equal(ours[name], ref[name]), name
    assert not torch.equal(ours["visual.attnpool.c_proj.weight"], tiny_clip().state_dict()["visual.attnpool.c_proj.weight"])


def test_compact_embedding_stays_exact_under_the_mixed_optimizer():
    """With the vision tower on SGD the token embedding is on AdamW: four steps with the compact embedding give
    the dense run's losses and all 49408 rows."""
    def state(compact):
        recipe = TrainRecipe(lr=0.2, weight_decay=0.01, compact_embedding=compact, optimizer="sgd", text_lr=1e-3,
                             text_weight_decay=0.1, epochs=1, steps_per_epoch=20, lr_warmup_steps=2, text_mode="unique")
        return build_engine(tiny_clip(), prompt_tables()[1], recipe).state

    dense, compact = state(False), state(True)
    assert run_steps(dense, 4) == pytest.approx(run_steps(compact, 4), abs=1e-12)
    a, b = dense.model.state_dict(), compact.model.state_dict()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-10, atol=1e-14), name


@pytest.mark.parametrize("kind, lrs", [("sgd", [0.5, 2.0, 1e-3]), ("muon", [0.5, 0.24, 2.0, 1e-3])])
def test_capturable_mixed_optimizer_keeps_one_lr_tensor_per_group(kind, lrs):
    """For CUDA graphs every group's lr is a device tensor the scheduler updates in place, SGD and Muon groups
    included, and a step reads them: it equals the step with float lrs (to float32 rounding, as the lr tensors
    are float32 as on the GPU and this model is float64; Muon's bf16 Newton-Schulz turns that into at most one
    bf16 rounding step of its update, lr x 2^-7)."""
    from bench.engine.cuda_graph import check_capturable
    from bench.engine.train_step import TrainState

    states = []
    for capturable in (True, False):
        model = tiny_clip()
        recipe = TrainRecipe(lr=0.5, weight_decay=0.01, optimizer=kind, norm_lr_scale=4, text_lr=1e-3)
        optimizer = build_optimizer(model, recipe, CPU, capturable=capturable)
        states.append(TrainState(model, optimizer, None, ClipLoss(), prompt_tables()[1], text_mode="all"))
    optimizer = states[0].optimizer
    assert all(isinstance(g["lr"], torch.Tensor) for g in optimizer.param_groups)
    assert [float(g["lr"]) for g in optimizer.param_groups] == pytest.approx(lrs)
    check_capturable(states[0])
    for state in states:
        run_steps(state, 2)
    captured, plain = (dict(s.model.visual.named_parameters()) for s in states)
    atol = 0.24 * 2 ** -7 if kind == "muon" else 1e-7
    assert all(torch.allclose(captured[k], plain[k], rtol=1e-6, atol=atol) for k in plain)


def test_lookahead_equals_its_formula():
    """Every 5 steps slow <- d slow + (1 - d) w and w <- slow, d = base^5 (t / T)^3; at T the weights are the slow
    copy. Checked against the recurrence in float64 on a scalar trajectory, including the final step."""
    total, base = 23, 0.9
    w = torch.zeros(2, dtype=torch.float64)
    lookahead = Lookahead([w], base, total)
    slow, expected = 0.0, 0.0
    for t in range(1, total + 1):
        w += t  # an optimizer step
        expected += t
        lookahead.after_step(t)
        if t % 5 == 0:
            d = base ** 5 * (t / total) ** 3
            slow = d * slow + (1 - d) * expected
            expected = slow
        if t == total:
            expected = slow
        assert w.tolist() == pytest.approx([expected] * 2, rel=1e-12), t
    assert w.tolist() == pytest.approx(lookahead.slow[0].tolist(), rel=0)


def test_lookahead_averages_the_optimizer_parameters_and_norm_statistics():
    model = tiny_clip()
    state = build_engine(model, prompt_tables()[1], TrainRecipe(lookahead=0.95, epochs=1, steps_per_epoch=10,
                                                                text_mode="unique")).state
    tensors = averaged_tensors(model, state.optimizer)
    ids = {id(t) for t in tensors}
    assert all(id(p) in ids for g in state.optimizer.param_groups for p in g["params"])
    assert id(model.token_embedding.active) in ids and id(model.token_embedding.frozen) not in ids
    bn = next(m for m in model.visual.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert id(bn.running_mean) in ids and id(bn.running_var) in ids and id(bn.num_batches_tracked) not in ids


def test_a_run_with_lookahead_ends_on_the_slow_weights():
    """After the last step the weights equal the slow copy, and differ from the same run without lookahead."""
    def train(lookahead):
        recipe = TrainRecipe(lr=1e-3, epochs=1, steps_per_epoch=7, lookahead=lookahead, text_mode="unique")
        state = build_engine(tiny_clip(), prompt_tables()[1], recipe).state
        run_steps(state, 7, clip_step)
        return state

    with_la, without = train(0.95), train(0.0)
    params = [p for g in with_la.optimizer.param_groups for p in g["params"]]
    assert all(torch.equal(p, s) for p, s in zip(params, with_la.lookahead.slow))
    assert not torch.equal(with_la.model.visual.attnpool.c_proj.weight, without.model.visual.attnpool.c_proj.weight)


def test_compact_embedding_refuses_torch_sgd_but_takes_the_mixed_optimizer():
    model = tiny_clip()
    emb = compact_embedding.install(model, prompt_tables()[1])
    optimizer = build_optimizer(model, TrainRecipe(lr=0.5, weight_decay=0.01, optimizer="sgd", text_lr=1e-3), CPU)
    compact_embedding.attach(emb, optimizer)  # the embedding's group is AdamW: exact


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_a_parameter_the_encoder_limits_trains_its_epochs_then_stays_frozen(kind):
    """``frozen_after_epochs``: the named parameter follows the run's own steps for its epochs (bitwise those of the
    run without the limit), then never changes; the others go on training."""
    def train(spans):
        """The visual tower's parameters after step 2 (one epoch) and after step 6 (all three), from one run: steps
        3-6 take the batches a 6-step run_steps would, so the second snapshot is that run's."""
        model = tiny_clip()
        model.visual.frozen_after_epochs = spans
        recipe = TrainRecipe(lr=0.05 if kind == "sgd" else 1e-3, weight_decay=0.1, epochs=3, steps_per_epoch=2,
                             lr_warmup_steps=1, optimizer=kind, text_lr=1e-3 if kind == "sgd" else None,
                             text_mode="unique")
        state = build_engine(model, prompt_tables()[1], recipe).state
        run_steps(state, 2)
        after_one = {k: v.detach().clone() for k, v in state.model.visual.named_parameters()}
        for i in range(2, 6):
            clip_step(state, *batch(seed=10 + i))
        return after_one, dict(state.model.visual.named_parameters())

    limited = "attnpool.c_proj.bias"
    (after_one_epoch, full), (free, free_full) = train({limited: 1}), train({})
    value = after_one_epoch[limited]
    assert torch.equal(value, free[limited])
    assert torch.equal(full[limited], value)
    assert not torch.equal(free_full[limited], value)
    assert not torch.equal(full["attnpool.c_proj.weight"], after_one_epoch["attnpool.c_proj.weight"])


@pytest.mark.parametrize("spans, message", [({"stem.nope": 3}, "not one of its parameters"),
                                            ({"attnpool.c_proj.bias": -1}, "number of epochs >= 0")])
def test_frozen_after_epochs_names_real_parameters(spans, message):
    from bench.errors import BenchError

    model = tiny_clip()
    model.visual.frozen_after_epochs = spans
    with pytest.raises(BenchError, match=message):
        param_groups(model, TrainRecipe(lr=1e-3, weight_decay=0.0))


def test_airbench_whitening_bias_is_limited_to_its_first_epochs():
    """airbench94's whitening stem: frozen weights, and a bias that trains ``whiten_bias_epochs`` (3) epochs only."""
    from bench.host.manager import get_entry

    factory = get_entry("encoders", "airbench").factory
    net = factory(embed_dim=8, image_size=32, widths=(8, 16, 16), whiten=True)
    assert net.frozen_after_epochs == {"stem.bias": 3} and not net.stem.weight.requires_grad
    assert factory(embed_dim=8, image_size=32, widths=(8, 16, 16), whiten=True,
                   whiten_bias_epochs=1).frozen_after_epochs == {"stem.bias": 1}
    assert factory(embed_dim=8, image_size=32, widths=(8, 16, 16)).frozen_after_epochs == {}


def airbench_newton_schulz(g, steps=3, eps=1e-7):
    """airbench94_muon's zeropower_via_newtonschulz5 for one matrix, as written there (dtype left to the caller)."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    x = g / (g.norm() + eps)
    if g.size(0) > g.size(1):
        x = x.T
    for _ in range(steps):
        A = x @ x.T
        B = b * A + c * A @ A
        x = a * x + B @ x
    return x.T if g.size(0) > g.size(1) else x


def test_batched_newton_schulz_is_airbenchs_per_matrix_and_flattens_the_spectrum():
    """One call on a stack equals airbench's function on each matrix (wide and tall); the result keeps the singular
    vectors and moves every singular value into about [0.6, 1.25] (from a spread of 10x) in airbench's 3 steps."""
    from bench.engine.optim import orthogonalize

    g = torch.Generator().manual_seed(0)
    for shape in ((4, 8, 18), (3, 18, 8)):
        u, _, v = torch.linalg.svd(torch.randn(*shape, generator=g, dtype=torch.float64), full_matrices=False)
        spread = torch.logspace(0, -1, min(shape[1:]), dtype=torch.float64)
        stack = u @ torch.diag_embed(spread.expand(shape[0], -1)) @ v
        out = orthogonalize(stack, dtype=torch.float64)
        for i in range(shape[0]):
            assert torch.allclose(out[i], airbench_newton_schulz(stack[i]), rtol=1e-10, atol=1e-12)
        inner = u.mT @ out @ v.mT  # diagonal: the same singular vectors
        sigma = torch.diagonal(inner, dim1=-2, dim2=-1)
        assert torch.allclose(inner, torch.diag_embed(sigma), atol=1e-9)
        assert sigma.min() > 0.6 and sigma.max() < 1.25, sigma


def test_muon_step_is_airbench94_muons():
    """Nesterov momentum, the filter bank renormalised to norm sqrt(out channels), then lr x the orthogonalised
    update, over 4 steps of two same-shaped filters (one batched call) and one of another shape."""
    from bench.engine.optim import muon_

    gen = torch.Generator().manual_seed(2)
    shapes = [(8, 4, 3, 3), (8, 4, 3, 3), (16, 8, 3, 3)]
    ours = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    ref = [p.clone() for p in ours]
    bufs, ref_bufs = [torch.zeros_like(p) for p in ours], [torch.zeros_like(p) for p in ours]
    for step in range(4):
        grads = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
        lr = 0.24 * (1 - step / 4)
        muon_(ours, grads, bufs, lr, 0.6, dtype=torch.float64)
        for p, g, buf in zip(ref, grads, ref_bufs):
            buf.mul_(0.6).add_(g)
            update = g.add(buf, alpha=0.6)
            p.mul_(len(p) ** 0.5 / p.norm())
            p.add_(airbench_newton_schulz(update.reshape(len(update), -1)).view(update.shape), alpha=-lr)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_muon_groups_take_the_vision_filters_only():
    """--optimizer muon: the vision tower's 4-d weights in one Muon group without decay; the tower's other
    parameters on SGD; the text tower on AdamW. After a few steps the filters' norms are sqrt(out channels)."""
    model = tiny_clip()
    recipe = TrainRecipe(lr=0.05, weight_decay=0.01, epochs=1, steps_per_epoch=3, optimizer="muon", text_lr=1e-3,
                         muon_lr=0.1, text_mode="unique")
    state = build_engine(model, prompt_tables()[1], recipe).state
    vision, muon, *rest = state.optimizer.param_groups
    filters = [p for p in model.visual.parameters() if p.ndim == 4]
    assert muon["muon"] and muon["weight_decay"] == 0 and {id(p) for p in muon["params"]} == {id(p) for p in filters}
    assert vision["lr"] == 0.05 and vision["sgd"] and not vision.get("muon")  # history.csv's lr is --lr's
    assert all(not g.get("muon") for g in rest) and rest[0]["sgd"] and not rest[-1].get("sgd")
    losses = run_steps(state, 3)
    assert all(torch.isfinite(torch.tensor(losses)))
    for p in filters:
        assert torch.allclose(p.norm(), torch.tensor(len(p) ** 0.5, dtype=p.dtype), rtol=0.3)
