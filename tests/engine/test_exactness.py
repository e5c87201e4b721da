"""The speed tricks of the engine compute the same function as the plain reference computation.

Each test compares against the plain form: every caption tokenized to the full 77-token context and
encoded on its own, dense AdamW over the whole token embedding, an eagerly run step.
"""
import math

import pytest
import torch

from bench.clip.loss import ClipLoss
from bench.clip.templates import OPENAI_CIFAR10_TEMPLATES, SEED_TEMPLATES, fill
from bench.clip.tokenizer import tokenize
from bench.data.datasets import CIFAR10_CLASSES
from bench.engine import compact_embedding
from bench.engine.cuda_graph import CudaGraphStep
from bench.engine.optim import build_optimizer, build_scheduler
from bench.engine.recipe import TrainRecipe
from bench.engine.train_step import TrainState, encode_prompts
from tests.support.models import CPU, batch, prompt_tables, run_steps, tiny_clip


@pytest.fixture(autouse=True)
def _float64_layer_norm(monkeypatch):
    """bench's LayerNorm upcasts to fp32 (for fp16 weights); in these float64 tests it computes in float64,
    so a difference left below is the computation's, not fp32 rounding's."""
    import bench.clip.text_transformer

    monkeypatch.setattr(bench.clip.text_transformer.LayerNorm, "forward", torch.nn.LayerNorm.forward)


def loss_and_grads(model, text_features_fn, images, labels, kind="clip"):
    model.zero_grad(set_to_none=True)
    image_features = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
    text_features = torch.nn.functional.normalize(text_features_fn(model), dim=-1)
    loss = ClipLoss(kind)(image_features, text_features, model.clamped_logit_scale(), labels)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert abs(float(loss_a - loss_b)) <= 1e-12
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], rtol=1e-9, atol=1e-14), name


def test_trimming_shortens_the_context_without_cutting_any_prompt():
    """The trimmed table keeps every token up to each prompt's end-of-text and drops only padding."""
    for templates in (SEED_TEMPLATES, OPENAI_CIFAR10_TEMPLATES):
        full, trimmed = prompt_tables(templates)
        assert trimmed.shape[1] < 20 < full.shape[1]
        assert torch.equal(full[:, :trimmed.shape[1]], trimmed)
        assert not full[:, trimmed.shape[1]:].any()
        assert int(trimmed.argmax(-1).max()) == trimmed.shape[1] - 1


@pytest.fixture(scope="module")
def plain_by_kind():
    """The 77-token reference's (loss, gradients) per loss kind, filled by the first test of each kind and only
    read after: it is the same computation for every text mode. (Filled inside the test, not here, so that it
    runs under the float64 LayerNorm of the function-scoped fixture above.)"""
    return {}


@pytest.mark.parametrize("kind", ["clip", "multipositive"])
@pytest.mark.parametrize("mode", ["unique", "all", "tree", "tree_all"])
def test_truncated_unique_prompt_encoding_equals_full_77_token_computation(mode, kind, plain_by_kind):
    """Loss and every parameter's gradient equal those of encoding each caption at 77 tokens on its own."""
    model = tiny_clip()  # seeded: the same weights as the model the cached reference was computed on
    full, trimmed = prompt_tables()
    images, labels, ids = batch()
    if kind not in plain_by_kind:
        plain_by_kind[kind] = loss_and_grads(model, lambda m: m.encode_text(full[ids]), images, labels, kind)
    plain = plain_by_kind[kind]
    fast = loss_and_grads(model, lambda m: encode_prompts(m, trimmed, ids, mode), images, labels, kind)
    assert_same(plain, fast)
    # the token embedding's gradient is non-zero only on the prompts' rows, in both computations
    rows = plain[1]["token_embedding.weight"].abs().sum(1).nonzero().flatten()
    assert set(rows.tolist()) <= set(trimmed.unique().tolist())


def test_prompt_tree_shares_prefixes():
    """The seed prompts' tree has far fewer nodes than the trimmed table has tokens, one end per prompt."""
    from bench.engine.prompt_tree import PromptTree

    _, trimmed = prompt_tables()
    tree = PromptTree.build(trimmed)
    assert len(tree) < trimmed.numel() / 2
    assert len(set(tree.eot.tolist())) == len(trimmed)
    assert torch.equal(tree.tokens[tree.eot], trimmed.max(dim=1).values)
    assert tree.allowed.sum(1).max() == trimmed.argmax(1).max() + 1  # a node sees its path, no more


def test_truncation_would_be_wrong_without_the_causal_mask():
    """The check above can fail: with the mask removed, padding changes the features (guards the test)."""
    model = tiny_clip()
    full, trimmed = prompt_tables()
    model.attn_mask.zero_()  # bool mask of False: attend everywhere
    a = model.encode_text(full[:4])
    b = model.encode_text(trimmed[:4])
    assert (a - b).abs().max() > 1e-4


def make_state(model, compact, scheduler_steps=20, capturable=False):
    full, trimmed = prompt_tables()
    if compact:
        emb = compact_embedding.install(model, trimmed)
    optimizer = build_optimizer(model, TrainRecipe(lr=1e-3, weight_decay=0.1), CPU, capturable=capturable)
    if capturable:  # its lr tensor is float32 (fine for training); float64 here, so the comparison stays sharp
        for group in optimizer.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float64)
    if compact:
        compact_embedding.attach(emb, optimizer)
    scheduler = build_scheduler(optimizer, scheduler_steps, warmup_steps=3)
    return TrainState(model, optimizer, scheduler, ClipLoss("clip"), trimmed, text_mode="all" if capturable else "unique")


def test_compact_embedding_training_equals_dense_adamw():
    """Four AdamW steps with the compact embedding give the dense run's losses and weights (all 49408 rows)."""
    dense, compact = make_state(tiny_clip(), False), make_state(tiny_clip(), True)
    assert dense.model.state_dict().keys() == compact.model.state_dict().keys()
    loss_dense, loss_compact = run_steps(dense, 4), run_steps(compact, 4)
    assert loss_dense == pytest.approx(loss_compact, abs=1e-12)
    a, b = dense.model.state_dict(), compact.model.state_dict()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-10, atol=1e-14), name
    # the unused rows did move (weight decay), so the comparison above covers the lazy decay
    untouched = ~compact.model.token_embedding.is_active
    assert not torch.equal(a["token_embedding.weight"][untouched], tiny_clip().token_embedding.weight[untouched])
    # and the optimizer holds only the used rows
    assert compact.model.token_embedding.active.shape[0] == len(prompt_tables()[1].unique())


def test_compact_embedding_state_dict_round_trip_and_unknown_ids():
    """A checkpoint has the dense OpenAI key; ids outside the prompts read the decayed dense rows."""
    state = make_state(tiny_clip(), True)
    run_steps(state, 2)
    emb = state.model.token_embedding
    sd = state.model.state_dict()
    plain = tiny_clip(seed=5)
    plain.load_state_dict(sd, strict=True)
    other = tokenize(fill(OPENAI_CIFAR10_TEMPLATES, CIFAR10_CLASSES))[:7]  # words the training prompts lack
    assert not emb.is_active[other].all()
    assert torch.allclose(plain.token_embedding(other), emb(other), rtol=1e-12, atol=0)
    fresh = make_state(tiny_clip(seed=7), True).model
    fresh.load_state_dict(sd, strict=True)
    assert torch.equal(fresh.token_embedding.weight, emb.weight)


def test_compact_embedding_refuses_optimizers_where_it_is_not_exact():
    """Under SGD with weight decay a zero-gradient row does not simply decay: refused, not approximated."""
    model = tiny_clip()
    emb = compact_embedding.install(model, prompt_tables()[1])
    with pytest.raises(TypeError, match="exact only under AdamW"):
        compact_embedding.attach(emb, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1))


def test_graph_step_function_equals_clip_step():
    """The CUDA-graph step (static text mode, capturable AdamW, tensor lr) run eagerly equals clip_step."""
    plain = make_state(tiny_clip(), True)
    plain.text_mode = "all"  # unique == all is the test above; here only the step machinery differs
    graphed = make_state(tiny_clip(), True, capturable=True)
    assert isinstance(graphed.optimizer.param_groups[0]["lr"], torch.Tensor)
    step = CudaGraphStep(eager_steps=1, capture=False)
    loss_plain, loss_graph = run_steps(plain, 4), run_steps(graphed, 4, step)
    # capturable fused AdamW orders its arithmetic slightly differently (~1e-11 after one step), which can flip
    # one fp32 rounding of the loss (the trainer computes it in fp32); a wrong lr or a missed scheduler step
    # would move weights by ~1e-4 per step, far outside these tolerances
    assert loss_plain == pytest.approx(loss_graph, abs=1e-6)
    assert graphed.step == 4 and step.eager_steps == 4
    # the schedule moved the very tensor the graph would read
    assert float(graphed.optimizer.param_groups[0]["lr"]) == pytest.approx(plain.optimizer.param_groups[0]["lr"])
    a, b = plain.model.state_dict(), graphed.model.state_dict()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=2e-6), name


def test_graph_step_refuses_dynamic_shapes():
    """Unique-prompt text mode has data-dependent shapes: the graph step says how to fix it."""
    from bench.errors import BenchError

    state = make_state(tiny_clip(), False, capturable=True)
    state.text_mode = "unique"
    images, labels, ids = batch()
    with pytest.raises(BenchError, match="static shapes"):
        CudaGraphStep(capture=False)(state, images, labels, ids)


def test_cpu_optimizer_is_fused_adamw():
    """CPU training uses the fused AdamW kernel (several times faster than foreach there)."""
    opt = build_optimizer(tiny_clip(), TrainRecipe(lr=1e-4, weight_decay=0.01), CPU)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults.get("fused")
    assert math.isclose(opt.defaults["weight_decay"], 0.01)


@pytest.mark.slow  # torch.compile
def test_compile_reaches_the_towers_the_step_calls():
    """--compile must compile what clip_step runs (encode_image/encode_text), not only CLIP.forward."""
    import torch._dynamo

    from bench.engine.build import compile_towers

    model = tiny_clip().float()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compile_towers(model, backend="eager")  # dynamo tracing without inductor's code generation
    images, _labels, ids = batch(n=4)
    _, trimmed = prompt_tables()
    model.encode_image(images.float())
    model.encode_text(trimmed[ids])
    assert torch._dynamo.utils.counters["frames"]["ok"] >= 2
    assert "token_embedding.weight" in model.state_dict()  # keys unchanged
