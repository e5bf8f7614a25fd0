"""Model zoo: architectures, parameter counts, bands, freezing, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from sandwatch.bands import L1C_BANDS, BandSpec, Normalization
from sandwatch.errors import SandwatchError
from sandwatch.models import (
    MODELS,
    Checkpoint,
    build_model,
    check_window,
    count_parameters,
    default_band_spec,
    parameter_table,
    prepare_input,
    select_bands,
    set_trainable,
)

torch.set_num_threads(2)


def meta(name, **kw):
    with torch.device("meta"):
        return build_model(name, **kw)


# --- parameter counts of the full-size definitions (no forward pass) ---------------------------

def test_unet_parameter_count_is_the_published_one():
    # Published U-Net with padded convs + BN, 3 input bands, 1 class: 31,037,633 parameters.
    assert count_parameters(meta("unet", bands=["R", "G", "B"])) == 31_037_633
    # each extra band adds one 3x3 kernel per first-level filter: 64 * 9
    assert count_parameters(meta("unet")) == 31_037_633 + 10 * 64 * 9
    assert count_parameters(meta("unet", bands=["R", "G", "B"], width=8)) < 31_037_633 / 50


@pytest.mark.parametrize("arch,depth", [("ssl4eo-resnet18", "resnet18"), ("ssl4eo-resnet50", "resnet50")])
def test_resnet_encoders_are_torchvision_resnets_with_13_band_conv1(arch, depth):
    with torch.device("meta"):
        ref = getattr(torchvision.models, depth)(weights=None)
    ref_total = count_parameters(ref)
    fc = ref.fc.weight.numel() + ref.fc.bias.numel()
    expected = ref_total - fc + (13 - 3) * 64 * 7 * 7
    model = meta(arch)
    assert count_parameters(model.encoder) == expected
    assert expected == {"resnet18": 11_207_872, "resnet50": 23_539_392}[depth]
    # encoder keys are torchvision's (without fc)
    own = set(model.encoder.state_dict())
    assert own == {k for k in ref.state_dict() if not k.startswith("fc.")}


def vit_block_params(d):
    return 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)


@pytest.mark.parametrize("arch,dim,depth,heads", [("satmae-base", 768, 12, 12), ("satmae-large", 1024, 24, 16)])
def test_satmae_parameter_counts(arch, dim, depth, heads):
    model = meta(arch)
    enc = model.encoder
    assert len(enc.blocks) == depth and enc.blocks[0].attn.num_heads == heads
    patch = dim * 10 * 8 * 8 + 3 * dim
    expected = depth * vit_block_params(dim) + patch + dim + 145 * (dim - 256) + 3 * 256 + 2 * dim
    assert count_parameters(enc) == expected
    assert tuple(enc.pos_embed.shape) == (1, 145, dim - 256)
    assert tuple(enc.patch_embed[2].proj.weight.shape) == (dim, 2, 8, 8)
    dec = count_parameters(model.decoder)
    assert dec == 3 * dim * 256 + 256 + 2 * 256 + 257
    assert dec < 1_000_000
    if arch == "satmae-large":
        assert 300e6 < count_parameters(enc) < 305e6  # ViT-large


def test_parameter_table_linear_probe_trains_only_decoders():
    rows = {r["name"]: r for r in parameter_table()}
    assert set(rows) == set(MODELS)
    assert rows["unet"]["trainable"] == rows["unet"]["parameters"]
    for name in ("ssl4eo-resnet18", "ssl4eo-resnet50", "satmae-base", "satmae-large"):
        assert rows[name]["trainable"] == rows[name]["decoder_parameters"]
        assert rows[name]["parameters"] == rows[name]["encoder_parameters"] + rows[name]["decoder_parameters"]
    assert rows["satmae-base"]["trainable"] < 1e6 and rows["satmae-large"]["trainable"] < 1e6
    assert 30.5e6 < rows["unet"]["parameters"] < 31.5e6


# --- forward passes -------------------------------------------------------------------------

SMALL = {
    "unet": {"width": 8},
    "ssl4eo-resnet18": {},
    "ssl4eo-resnet50": {"decoder_channels": [16, 16, 32, 64]},
    "satmae-base": {"depth": 1},
    "satmae-large": {"depth": 1},
}


@pytest.mark.parametrize("arch", list(MODELS))
def test_forward_160_gives_160_logits(arch):
    torch.manual_seed(0)
    model = build_model(arch, **SMALL[arch]).eval()
    x = torch.rand(1, len(model.band_spec.bands), 160, 160)
    with torch.no_grad():
        y = model(x)
        y2 = model.decoder_forward(model.encoder(x), x.shape[-2:])
    assert y.shape == (1, 1, 160, 160)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert torch.equal(y, y2)
    assert y.std() > 0  # a real map, not a constant


def test_resnet50_skips_and_published_decoder():
    torch.manual_seed(0)
    model = build_model("ssl4eo-resnet50").eval()
    assert [b.up.out_channels for b in model.decoder.ups] == [1024, 512, 256, 64]
    with torch.no_grad():
        feats = model.encoder(torch.rand(1, 13, 160, 160))
        assert [tuple(f.shape[1:]) for f in feats] == [
            (64, 80, 80), (256, 40, 40), (512, 20, 20), (1024, 10, 10), (2048, 5, 5)]
        assert model.decoder_forward(feats, (160, 160)).shape == (1, 1, 160, 160)


@pytest.mark.slow
def test_forward_satmae_base_full_depth_token_grid():
    model = build_model("satmae-base").eval()
    with torch.no_grad():
        feats = model.encoder(torch.rand(1, 10, 160, 160))
        assert len(feats) == 1 and feats[0].shape == (1, 3 * 768, 20, 20)
        assert model.decoder_forward(feats, (160, 160)).shape == (1, 1, 160, 160)


def test_unet_rgb_and_odd_sizes():
    model = build_model("unet", bands=["R", "G", "B"], width=8).eval()
    assert model.band_spec.bands == ("R", "G", "B")
    assert model.encoder.inc[0].in_channels == 3
    with torch.no_grad():
        assert model(torch.rand(1, 3, 75, 93)).shape == (1, 1, 75, 93)
    feats = model.encoder(torch.rand(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [8, 16, 32, 64, 128]
    assert [f.shape[-1] for f in feats] == [64, 32, 16, 8, 4]


def test_satmae_window_constraint_and_token_grid():
    model = build_model("satmae-base", depth=1).eval()
    with pytest.raises(ValueError, match="multiple of 8"):
        model(torch.rand(1, 10, 150, 150))
    with torch.no_grad():
        feats = model.encoder(torch.rand(1, 10, 96, 128))  # non-square: pos_embed interpolated
    assert feats[0].shape == (1, 2304, 12, 16)
    assert check_window("satmae-base", 160) == 160
    with pytest.raises(SandwatchError, match="multiple of 8"):
        check_window("satmae-large", 150)
    assert check_window("unet", 150) == 150


def test_satmae_groups_see_their_own_bands():
    """Changing B11 only changes group 3's patch embedding input; group order follows the published groups."""
    enc = build_model("satmae-base", depth=1).encoder.eval()
    assert enc.channel_groups == ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))
    x = torch.rand(1, 10, 16, 16)
    y = x.clone()
    y[:, 8] += 1.0  # B11
    e0 = [emb(x[:, list(g)]) for emb, g in zip(enc.patch_embed, enc.channel_groups)]
    e1 = [emb(y[:, list(g)]) for emb, g in zip(enc.patch_embed, enc.channel_groups)]
    assert torch.equal(e0[0], e1[0]) and torch.equal(e0[1], e1[1]) and not torch.equal(e0[2], e1[2])


# --- bands, normalisation --------------------------------------------------------------------

def test_default_band_specs_follow_the_field_guide():
    s = default_band_spec("satmae-base")
    assert s.bands == ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    assert s.normalization.low[0] == pytest.approx((1184.38 - 2 * 650.28) * 1e-4)
    assert s.normalization.high[-1] == pytest.approx((1247.92 + 2 * 1087.60) * 1e-4)
    r = default_band_spec("ssl4eo-resnet50")
    assert r.bands == L1C_BANDS
    assert r.normalization == Normalization.constant(13, 0.0, 1.0)
    x = np.full((13, 2, 2), 0.25, np.float32)
    x[0] = 1.7
    out = r.normalization(x)
    assert out[0].max() == 1.0 and out[1].min() == pytest.approx(0.25)
    u = default_band_spec("unet", ["R", "G", "B"])
    assert u.normalization.low == (0.0, 0.0, 0.0) and u.normalization.high == (1.0, 1.0, 1.0)
    with pytest.raises(SandwatchError, match="must be exactly"):
        default_band_spec("satmae-base", ["B02", "B03", "B04"])
    with pytest.raises(SandwatchError, match="unknown band"):
        build_model("unet", bands=["B02", "XX"])


def test_prepare_input_selects_and_orders_bands_by_name():
    offered = ("B04", "B03", "B02", "B08", "B11", "B12", "B05", "B06", "B07", "B8A", "B01")
    data = np.stack([np.full((3, 4), i / 100, np.float32) for i in range(len(offered))])
    spec = default_band_spec("satmae-base")
    picked, present = select_bands(data, offered, spec.bands)
    assert all(present)
    assert picked[:, 0, 0].tolist() == pytest.approx([0.02, 0.01, 0.0, 0.06, 0.07, 0.08, 0.03, 0.09, 0.04, 0.05])
    x = prepare_input(data, offered, spec)
    assert x.shape == (10, 3, 4)
    assert x[0, 0, 0] == pytest.approx((0.02 - spec.normalization.low[0]) / (spec.normalization.high[0] - spec.normalization.low[0]))
    # L2A scene (no B10) for a 13-band SSL4EO model: an error, or explicit zero fill
    l2a = [b for b in L1C_BANDS if b != "B10"]
    d2 = np.full((12, 2, 2), 0.3, np.float32)
    r = default_band_spec("ssl4eo-resnet18")
    with pytest.raises(SandwatchError, match="lacks band.*B10"):
        prepare_input(d2, l2a, r, source="scene.tif")
    filled = prepare_input(d2, l2a, r, fill_missing=True)
    assert filled[10].max() == 0.0 and filled[9].min() == pytest.approx(0.3)
    # true colour does not stand in for B04/B03/B02 (different scaling): a clear error
    rgb = np.stack([np.full((1, 1), v, np.float32) for v in (0.4, 0.5, 0.6)])
    with pytest.raises(SandwatchError, match="true-colour"):
        select_bands(rgb, ("R", "G", "B"), ("B02", "B03", "B04"))


def test_unknown_names_and_options_are_clear_errors():
    with pytest.raises(SandwatchError, match="unknown model 'resnet9'.*unet"):
        build_model("resnet9")
    with pytest.raises(SandwatchError, match="unknown option.*depth"):
        build_model("unet", depth=3)


# --- freezing --------------------------------------------------------------------------------

def _train_steps(model, steps=3):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(1)
    model.train()
    for _ in range(steps):
        x = torch.rand(2, 13, 32, 32)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(x), (x[:, :1] > 0.5).float(), pos_weight=torch.tensor(6.0))
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_frozen_encoder_comes_out_of_training_bit_identical():
    torch.manual_seed(0)
    model = build_model("ssl4eo-resnet18", freeze_encoder=True)
    assert model.encoder_frozen
    enc_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    dec_before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    _train_steps(model)
    assert not model.encoder.training and model.decoder.training
    for k, v in model.encoder.state_dict().items():  # weights and BN running stats
        assert torch.equal(v, enc_before[k]), k
    assert any(not torch.equal(v, dec_before[k]) for k, v in model.decoder.state_dict().items())
    assert count_parameters(model, trainable_only=True) == count_parameters(model.decoder)
    # fine-tuning moves the encoder
    set_trainable(model, False)
    _train_steps(model, 1)
    assert not torch.equal(model.encoder.conv1.weight, enc_before["conv1.weight"])
    with pytest.raises(SandwatchError, match="linear_probe"):
        set_trainable(model, "frozen")


# --- checkpoints -----------------------------------------------------------------------------

def test_checkpoint_describes_itself_and_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = build_model("unet", bands=["R", "G", "B"], width=8).eval()
    spec = BandSpec(("R", "G", "B"), Normalization((0.1, 0.1, 0.1), (0.9, 0.8, 0.7)))
    ckpt = Checkpoint.from_model(model, window=128, threshold=0.6, band_spec=spec, metadata={"epoch": 3})
    path = ckpt.save(tmp_path / "best.pt")
    back = Checkpoint.load(path)
    assert (back.arch, back.options, back.bands, back.window, back.threshold) == ("unet", {"width": 8}, ("R", "G", "B"), 128, 0.6)
    assert back.band_spec == spec
    rebuilt = back.build_model()
    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    with pytest.raises(SandwatchError, match="multiple of 8"):
        Checkpoint.from_model(build_model("satmae-base", depth=1), window=100)


def test_up_block_with_a_frozen_skip_equals_the_concatenated_form():
    """With a skip that needs no gradient (frozen encoder) the up block splits its first
    convolution; outputs and every parameter's gradient equal the concatenated form's."""
    from sandwatch.models.unet import UpBlock

    torch.manual_seed(0)
    block = UpBlock(16, 12, 8).train()
    x = torch.randn(2, 16, 5, 5, requires_grad=True)
    skip = torch.randn(2, 12, 10, 10)                       # no grad: the split path
    out = block(x, skip)
    out.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in block.named_parameters()}
    gx = x.grad.clone()

    block.zero_grad()
    x.grad = None
    ref_skip = skip.clone().requires_grad_(True)           # needs grad: the concatenated path
    ref = block(x, ref_skip)
    ref.square().sum().backward()
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(x.grad, gx, atol=1e-4)
    for n, p in block.named_parameters():
        assert torch.allclose(p.grad, grads[n], rtol=1e-4, atol=1e-4), n
    with torch.no_grad():                                   # inference keeps the one convolution
        assert torch.allclose(block(x, skip), ref, atol=1e-5)
