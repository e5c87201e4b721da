"""The timm encoders: every curated one trains through `bench run`; `timm:<model>`; pooling and projection."""
import re

import pandas as pd
import pytest
import torch
from torch import nn

from bench.errors import BenchError
from bench.host.manager import build_host
from tests.support.runs import TINY_RUN

CURATED_NAMES = build_host(entry_points=False).registry.names("encoders", "timm/*")


def test_curated_set_spans_the_families_the_issue_names():
    """At least 8 curated encoders covering ResNet, ConvNeXt, ViT, EfficientNet/MobileNet and RegNet."""
    registry = build_host(entry_points=False).registry
    families = {registry.get("encoders", n).meta["family"] for n in CURATED_NAMES}
    assert len(CURATED_NAMES) >= 8
    assert {"resnet", "convnext", "vit", "regnet"} <= families and families & {"efficientnet", "mobilenet"}


@pytest.mark.slow  # a run per curated encoder; quick tests build them
@pytest.mark.parametrize("name", CURATED_NAMES)
def test_curated_encoder_trains_through_bench_run(run_cli, name):
    """`bench run --encoder timm/<x> --preset smoke --dataset synthetic` trains (two steps) and writes a row."""
    code, out, err = run_cli("run", "--encoder", name, "--preset", "smoke", *TINY_RUN, "--out", "out")
    assert code == 0, err
    row = pd.read_csv("out/runs.csv").iloc[-1]
    assert row["encoder"] == name and row["params"] > 0 and 0 <= row["zeroshot_top1"] <= 1


@pytest.mark.parametrize("name", CURATED_NAMES)
def test_summary_states_the_final_map_the_32px_adaptation_gives(name):
    """Each summary's "NxN final map" / "T tokens" is what the adapted trunk produces at 32 px (shapes only)."""
    entry = build_host(entry_points=False).registry.get("encoders", name)
    with torch.device("meta"):
        tower = entry.create(16, 32)
        features = tower.trunk.forward_features(torch.zeros(2, 3, 32, 32))
    side = re.search(r"(\d+)x\1 final map", entry.summary)
    if side:
        assert features.ndim == 4 and tuple(features.shape[-2:]) == (int(side[1]),) * 2
    else:
        tokens = int(re.search(r"(\d+) tokens", entry.summary)[1])
        assert features.shape[1] == tokens + tower.trunk.num_prefix_tokens


def test_any_timm_model_takes_options_and_img_size():
    """`timm:<model>` builds any timm model; options reach timm.create_model; ViTs get img_size 32."""
    registry = build_host(entry_points=False).registry
    tower = registry.get("encoders", "timm:resnet10t").create(16, 32, drop_path_rate=0.1)
    assert max(getattr(m, "drop_prob", 0) for m in tower.modules()) == pytest.approx(0.1)
    vit = registry.get("encoders", "timm:vit_tiny_patch16_224").create(16, 32, depth=1)
    assert vit.trunk.patch_embed.img_size == (32, 32) and vit(torch.zeros(2, 3, 32, 32)).shape == (2, 16)


def test_unknown_timm_model_and_pretrained_are_one_line_errors(run_cli):
    """A misspelt timm name suggests close names; pretrained weights are refused (no network), exit 2."""
    code, _, err = run_cli("run", "--encoder", "timm:resnet181", *TINY_RUN)
    assert code == 2 and "unknown timm model 'resnet181'" in err and "resnet18" in err and err.count("\n") == 1
    code, _, err = run_cli("run", "--encoder", "timm/resnet18", "--encoder-opt", "pretrained=true", *TINY_RUN)
    assert code == 2 and "pretrained weights are never loaded" in err and err.count("\n") == 1


def test_default_head_is_avg_pool_then_linear_without_bias():
    """The documented defaults, as open_clip's TimmModel: average pool of the final map, bias-free linear."""
    tower = build_host(entry_points=False).registry.get("encoders", "timm/regnetx_002").create(24, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = tower.trunk.forward_features(x).mean(dim=(2, 3)) @ tower.head.proj.weight.T
        assert torch.allclose(tower(x), expected, atol=1e-5)
    assert [type(m) for m in tower.head] == [nn.Dropout, nn.Linear] and tower.head.proj.bias is None


@pytest.mark.parametrize("opts", [dict(pool="max"), dict(pool="abs_attn", proj="none"), dict(pool="rot_attn", proj="none"),
                                  dict(proj="mlp", proj_bias=True)])
def test_pool_and_projection_choices_give_embed_dim(opts):
    """Every pool/projection choice maps 32 px images to (N, embed_dim) and trains (gradients reach the trunk)."""
    tower = build_host(entry_points=False).registry.get("encoders", "timm/regnetx_002").create(24, 32, **opts)
    out = tower(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 24) and tower.trunk.stem.conv.weight.grad is not None


def test_attention_pools_refuse_token_trunks():
    """A ViT gives tokens, not a map: the attention pools say so at construction, not at the first forward."""
    entry = build_host(entry_points=False).registry.get("encoders", "timm:vit_tiny_patch16_224")
    for pool in ("abs_attn", "rot_attn"):
        with pytest.raises(BenchError, match=f"pool='{pool}' needs a feature map"):
            entry.create(8, 32, pool=pool, depth=1)


def test_bad_pool_or_projection_is_a_bench_error():
    """Invalid choices name the option and the fix instead of asserting inside timm."""
    entry = build_host(entry_points=False).registry.get("encoders", "timm/regnetx_002")
    for opts, words in [(dict(pool="token"), "pool='token'"), (dict(pool="mean"), "unknown pool"),
                        (dict(proj="none"), "proj='none' needs"), (dict(pool="abs_attn"), None)]:
        if words is None:  # abs_attn + the default linear projection is valid
            assert entry.create(8, 32, **opts)(torch.zeros(2, 3, 32, 32)).shape == (2, 8)
            continue
        with pytest.raises(BenchError, match=re.escape(words)):
            entry.create(8, 32, **opts)
