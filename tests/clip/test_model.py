"""The reference CLIP: size, OpenAI state-dict layout, build_model inference, fp16 conversion."""
import math

import pytest
import torch

from bench import CLIP, build_model, convert_weights, create_model
from bench.clip.model import count_parameters


@pytest.fixture(scope="module")
def reference_clip():
    """The 51.7M-parameter reference CLIP, built once for the tests that only read it (half a second each build)."""
    return CLIP()


def test_reference_configuration_has_the_spec_parameter_count():
    assert count_parameters(create_model()) == 51_688_753


def test_state_dict_uses_openai_clip_key_names(reference_clip):
    keys = set(reference_clip.state_dict())
    for key in ("visual.conv1.weight", "visual.layer1.0.downsample.0.weight", "visual.attnpool.positional_embedding",
                "visual.attnpool.q_proj.weight", "transformer.resblocks.0.attn.in_proj_weight",
                "transformer.resblocks.5.mlp.c_fc.weight", "token_embedding.weight", "positional_embedding",
                "ln_final.weight", "text_projection", "logit_scale"):
        assert key in keys
    assert not any("attn_mask" in k for k in keys)


def _round_trip(model):
    model.eval()
    rebuilt = build_model({k: v.clone() for k, v in model.state_dict().items()},
                          stem=getattr(model.visual, "stem", "openai"))
    size = model.visual.input_resolution
    images = torch.randn(2, 3, size, size)
    tokens = torch.zeros(2, model.context_length, dtype=torch.long)
    tokens[:, :4] = torch.tensor([49406, 320, 2368, 49407])
    with torch.no_grad():
        expected, _ = model(images, tokens)
        got, _ = rebuilt(images, tokens)
    torch.testing.assert_close(got, expected)
    return rebuilt


def test_build_model_infers_the_seed_config_and_loads_strictly(reference_clip):
    rebuilt = _round_trip(reference_clip)  # its only change to the model is eval(), which no other reader sees
    assert count_parameters(rebuilt) == 51_688_753
    assert rebuilt.visual.input_resolution == 32


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_build_model_infers_an_rn50_shaped_config_at_224px():
    model = CLIP(embed_dim=64, image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64,
                 context_length=16, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=1)
    rebuilt = _round_trip(model)
    assert [len(getattr(rebuilt.visual, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert rebuilt.visual.input_resolution == 224
    assert rebuilt.visual.attnpool.positional_embedding.shape == (7 * 7 + 1, 2048)


def test_build_model_round_trips_the_cifar_stem():
    model = create_model("modified_resnet_cifar", embed_dim=32, transformer_width=64, transformer_heads=1,
                         transformer_layers=1, encoder_opts={"width": 8})
    assert model.visual.attnpool.positional_embedding.shape[0] == 4 * 4 + 1
    _round_trip(model)


def test_convert_weights_casts_like_openai():
    model = convert_weights(CLIP(transformer_layers=1))
    assert model.visual.conv1.weight.dtype == torch.float16
    assert model.transformer.resblocks[0].attn.in_proj_weight.dtype == torch.float16
    assert model.text_projection.dtype == torch.float16
    assert model.ln_final.weight.dtype == torch.float32  # LayerNorm stays fp32
    assert model.visual.bn1.weight.dtype == torch.float32


def test_fp16_state_dict_rebuilds_as_fp16():
    sd = convert_weights(CLIP(transformer_layers=1)).state_dict()
    assert build_model(sd).text_projection.dtype == torch.float16


def test_logit_scale_starts_at_one_over_007_and_is_clamped_at_100():
    model = CLIP(transformer_layers=1)
    assert math.isclose(float(model.logit_scale.detach()), math.log(1 / 0.07), rel_tol=1e-6)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert float(model.clamped_logit_scale().detach()) == 100.0


def test_forward_returns_logits_per_image_and_their_transpose():
    model = create_model("modified_resnet", embed_dim=16, transformer_width=32, transformer_heads=2,
                         transformer_layers=1, encoder_opts={"width": 8}).eval()
    tokens = torch.zeros(3, 77, dtype=torch.long)
    tokens[:, :3] = torch.tensor([49406, 320, 49407])
    per_image, per_text = model(torch.randn(2, 3, 32, 32), tokens)
    assert per_image.shape == (2, 3)
    torch.testing.assert_close(per_text, per_image.t())


def test_text_features_of_a_trimmed_context_equal_the_full_77_token_computation():
    from bench.clip.tokenizer import tokenize, trim_tokens

    torch.manual_seed(0)
    model = CLIP(transformer_layers=2).eval()
    tokens = tokenize(["a photo of a cat", "a blurry photo of the big automobile.", "dog"])
    trimmed = trim_tokens(tokens)
    assert trimmed.shape[1] == 10  # start + 8 tokens + end of the longest prompt
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(trimmed), model.encode_text(tokens), rtol=1e-5, atol=1e-5)


def test_vit_patch_size_is_refused_with_a_pointer():
    with pytest.raises(ValueError, match="register a ViT encoder"):
        CLIP(vision_patch_size=4)


# Tiny towers: the question is the attribute, not the weights. airbench with flip_tta off averages nothing.
TTA_CASES = [("airbench", {"widths": [8, 8, 8]}, True), ("airbench_wide", {"widths": [8, 8, 8]}, True),
             ("airbench", {"widths": [8, 8, 8], "flip_tta": False}, False),
             ("airbench", {"widths": [8, 8, 8], "flip_tta": False, "translate_tta": True}, True),
             ("modified_resnet", {"width": 8}, False)]


@pytest.mark.parametrize("encoder, opts, expected", TTA_CASES)
def test_reports_without_tta_is_the_runs_own_test_of_the_tower_it_builds(encoder, opts, expected):
    """The answer a sweep's --until zeroshot_top1_no_tta gets before any run (a tower built on the meta device)
    is the run's own test (averages_views) of the CLIP it builds for real, so the two cannot disagree."""
    from bench.clip.configs import ModelCfg, TextCfg
    from bench.clip.model import averages_views, create_model_from_cfg, reports_without_tta

    cfg = ModelCfg(encoder=encoder, embed_dim=16, image_resolution=32, text=TextCfg(width=32, heads=2, layers=1),
                   encoder_opts=tuple(sorted(opts.items())))
    assert reports_without_tta(cfg) is expected
    assert averages_views(create_model_from_cfg(cfg).visual) is expected


def tta_plugin(built_on: list, refuse_meta: bool = False):
    """A plugin with one encoder, ``test/tta``, that averages views; each build appends the device it built on."""
    import bench

    class Plugin:
        @bench.hookimpl
        def register_encoders(self, register):
            def factory(embed_dim, image_size):
                from torch import nn

                device = torch.empty(0).device.type  # the device a factory's tensors go to
                built_on.append(device)
                if refuse_meta and device == "meta":
                    raise RuntimeError("this factory needs real tensors")
                tower = nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, embed_dim))
                tower.test_time_augmentation = True
                return tower

            register("test/tta", factory, "averages views")

    return Plugin()


def test_reports_without_tta_builds_nothing_real_unless_the_factory_refuses_the_meta_device():
    """The check of every configuration of a sweep allocates nothing (the tower is built on the meta device). A
    factory that cannot build there is built for real, the run's answer still, and the caller's RNG does not move."""
    import bench.testing
    from bench.clip.configs import ModelCfg
    from bench.clip.model import reports_without_tta

    cfg = ModelCfg(encoder="test/tta", embed_dim=16, image_resolution=16)
    built_on = []
    with bench.testing.plugin_registered(tta_plugin(built_on)):
        assert reports_without_tta(cfg) is True
    assert built_on == ["meta"]
    built_on = []
    with bench.testing.plugin_registered(tta_plugin(built_on, refuse_meta=True)):
        state = torch.random.get_rng_state()
        assert reports_without_tta(cfg) is True
        assert torch.equal(torch.random.get_rng_state(), state)
    assert built_on == ["meta", "cpu"]

