"""The reference CLIP: size, OpenAI state-dict layout, build_model inference, fp16 conversion."""
import math

import pytest
import torch

from bench import CLIP, build_model, convert_weights, create_model
from bench.clip.model import count_parameters


def test_reference_configuration_has_the_spec_parameter_count():
    assert count_parameters(create_model()) == 51_688_753


def test_state_dict_uses_openai_clip_key_names():
    keys = set(CLIP().state_dict())
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


def test_build_model_infers_the_seed_config_and_loads_strictly():
    rebuilt = _round_trip(CLIP())
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
