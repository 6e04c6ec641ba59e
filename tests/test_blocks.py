"""The shared blocks: shapes at every resolution, the U-Net's skips, the embedding input."""

import pytest
import torch

from aediff.blocks import (
    Attention2d,
    Decoder,
    Encoder,
    ResBlock,
    TimestepEmbedding,
    sinusoidal_embedding,
    stage_shapes,
    stage_sizes,
)
from aediff.errors import ConfigError


@pytest.mark.parametrize("size,expected", [(28, [28, 14, 7]), (8, [8, 4, 2]), (32, [32, 16, 8]), (7, [7, 4, 2])])
def test_stage_sizes_match_strided_convs(size, expected):
    assert stage_sizes(size, 3) == expected
    enc = Encoder(1, (4, 8, 8), 1, size)
    h, _ = enc(torch.zeros(2, 1, size, size))
    assert h.shape[-1] == expected[-1]


@pytest.mark.parametrize(("shape", "stages", "most"), [((2, 2), 3, 2), ((1, 1), 2, 1), ((4, 4), 4, 3), ((3, 3), 4, 3)])
def test_a_stage_after_1x1_is_refused_naming_how_many_fit(shape, stages, most):
    """An AE on 2x2 images with three stages (the default widths) once stopped with NaN in bf16: its third stage
    halved a 1x1 map again and normalised single pixels. Exactly the stages that still halve are allowed."""
    with pytest.raises(ConfigError, match=f"at most {most} stages; --widths gives {stages}"):
        stage_shapes(shape, stages)
    assert stage_shapes(shape, most)[-1] == (1, 1)  # the largest allowed count reaches 1x1 once
    assert stage_shapes((1, 8), 4) == [(1, 8), (1, 4), (1, 2), (1, 1)]  # one side at 1 is fine while the other halves


@pytest.mark.parametrize("size", [8, 28, 32, 7])
@pytest.mark.parametrize("skips", [False, True])
def test_encoder_decoder_round_trip_shapes(size, skips):
    channels = (8, 16, 16)
    enc = Encoder(3, channels, 2, size, attention_resolutions=(stage_sizes(size, 3)[-1],))
    dec = Decoder(3, channels, 2, size, skip_channels=enc.skip_channels if skips else None)
    x = torch.randn(2, 3, size, size)
    h, skip_list = enc(x)
    assert len(skip_list) == len(enc.skip_channels)
    assert [s.shape[1] for s in skip_list] == enc.skip_channels
    out = dec(h, skips=skip_list if skips else None)
    assert out.shape == x.shape


def test_unet_decoder_requires_skips():
    enc = Encoder(1, (8, 16), 1, 8)
    dec = Decoder(1, (8, 16), 1, 8, skip_channels=enc.skip_channels)
    h, _ = enc(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="skip"):
        dec(h)


def test_resblock_embedding_changes_output_and_is_required():
    block = ResBlock(4, 8, emb_dim=6)
    x = torch.randn(2, 4, 5, 5)
    with pytest.raises(ValueError, match="emb"):
        block(x)
    torch.nn.init.normal_(block.emb_proj.weight)
    a = block(x, torch.zeros(2, 6))
    b = block(x, torch.ones(2, 6))
    assert a.shape == (2, 8, 5, 5)
    assert not torch.allclose(a, b)


def test_attention_is_residual_and_permutation_equivariant():
    attn = Attention2d(8)
    x = torch.randn(1, 8, 3, 3)
    out = attn(x)
    assert out.shape == x.shape
    # Attention treats positions as a set: permuting the pixels permutes the output the same way.
    perm = torch.randperm(9)
    xp = x.flatten(2)[:, :, perm].reshape_as(x)
    assert torch.allclose(attn(xp).flatten(2), out.flatten(2)[:, :, perm], atol=1e-5)


def test_cross_attention_reads_context_and_ignores_padding():
    torch.manual_seed(0)
    attn = Attention2d(8, context_dim=6)
    x, context = torch.randn(2, 8, 3, 3), torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    out = attn(x, context, mask)
    # Changing a padded token leaves the output alone; changing a real one does not.
    padded = context.clone()
    padded[0, 3] += 5
    assert torch.allclose(attn(x, padded, mask)[0], out[0], atol=1e-6)
    real = context.clone()
    real[0, 0] += 5
    assert not torch.allclose(attn(x, real, mask)[0], out[0], atol=1e-3)
    with pytest.raises(ValueError, match="context"):
        attn(x)


def test_sinusoidal_embedding_distinguishes_timesteps():
    emb = sinusoidal_embedding(torch.tensor([0.0, 1.0, 500.0]), 16)
    assert emb.shape == (3, 16)
    assert torch.allclose(emb[0, :8], torch.ones(8))  # cos(0) = 1
    assert (emb[1] - emb[2]).abs().max() > 0.1
    assert TimestepEmbedding(16, 32)(torch.arange(4.0)).shape == (4, 32)
