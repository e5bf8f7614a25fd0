"""Masked autoencoding continuing the Spectral SatMAE group-channel ViT (Cong et al. 2022).

As the published pre-training: patch tokens of each band group (B02 B03 B04 B08)
(B05 B06 B07 B8A) (B11 B12) are masked at ``mae.mask_ratio`` 0.75, independently per group
(``mae.spatial_mask: true`` masks the same patches in every group); the encoder
(:class:`~sandwatch.models.satmae.GroupChannelViT`, through its ``embed``/``encode`` hooks)
sees only the visible tokens; the decoder (:class:`SatMAEDecoder`: linear to 512, mask tokens,
position + group embeddings, 8 ViT blocks of 16 heads, one linear per group back to its
pixels) reconstructs every patch; the loss is the mean squared error on the masked patches
(``mae.norm_pix_loss``: each target patch normalised first). AdamW (0.9, 0.95), cosine.

The decoder's parameter names are the published ones (``decoder_embed``, ``mask_token``,
``decoder_pos_embed``, ``decoder_channel_embed``, ``decoder_blocks``, ``decoder_norm``,
``decoder_pred``): started from a published checkpoint that holds a decoder of this size it
continues, otherwise it is created afresh. The file written is the published layout
(``{"model": encoder + decoder keys, "args": Namespace, "epoch": E}``), which the zoo reads
(``satmae``; the decoder keys are set aside when it builds a segmentation model).
"""

from __future__ import annotations

import argparse
import warnings
from functools import partial

import torch
from torch import nn

from sandwatch.pretrain.module import PretrainTask


class SatMAEDecoder(nn.Module):
    """The MAE decoder of the group-channel ViT (published parameter names)."""

    def __init__(self, embed_dim: int, groups, patch: int, grid: int, dim: int = 512, depth: int = 8,
                 heads: int = 16, channel_embed: int = 128):
        super().__init__()
        from timm.models.vision_transformer import Block

        if dim <= channel_embed:
            raise ValueError("mae.decoder_dim must be larger than mae.decoder_channel_embed")
        self.groups, self.patch, self.grid = [list(g) for g in groups], int(patch), int(grid)
        self.decoder_embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim - channel_embed))
        self.decoder_channel_embed = nn.Parameter(torch.zeros(1, len(self.groups), channel_embed))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_blocks = nn.ModuleList(Block(dim, heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm)
                                            for _ in range(depth))
        self.decoder_norm = norm(dim)
        self.decoder_pred = nn.ModuleList(nn.Linear(dim, len(g) * patch * patch) for g in self.groups)
        for p in (self.mask_token, self.decoder_pos_embed, self.decoder_channel_embed):
            nn.init.normal_(p, std=0.02)

    def forward(self, latent: torch.Tensor, keep: torch.Tensor, length: int, gh: int, gw: int) -> list[torch.Tensor]:
        """``latent`` (N, 1 + G*V, D) encoder output, ``keep`` (N, G, V) visible token indices ->
        per group the predicted pixels of every patch, (N, L, len(g) * p * p)."""
        n, groups, visible = keep.shape
        y = self.decoder_embed(latent)
        dim = y.shape[-1]
        full = self.mask_token.to(y.dtype).expand(n, groups, length, dim).clone()
        full.scatter_(2, keep[..., None].expand(-1, -1, -1, dim), y[:, 1:].reshape(n, groups, visible, dim))
        pos = self.decoder_pos_embed
        if (gh, gw) != (self.grid, self.grid):
            from timm.layers import resample_abs_pos_embed

            pos = resample_abs_pos_embed(pos, [gh, gw], [self.grid, self.grid], num_prefix_tokens=1)
        chan = self.decoder_channel_embed
        full = full + torch.cat([pos[:, 1:].unsqueeze(1).expand(-1, groups, -1, -1),
                                 chan.unsqueeze(2).expand(-1, -1, length, -1)], dim=-1)
        cls = y[:, :1] + torch.cat([pos[:, :1], torch.zeros_like(chan[:, :1])], dim=-1)
        t = torch.cat([cls, full.reshape(n, groups * length, dim)], dim=1)
        for blk in self.decoder_blocks:
            t = blk(t)
        t = self.decoder_norm(t)[:, 1:].reshape(n, groups, length, dim)
        return [pred(t[:, g]) for g, pred in enumerate(self.decoder_pred)]


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, L, C * p * p), patches row-major."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (h // p) * (w // p), c * p * p)


class MaeTask(PretrainTask):
    optimizer_name = "adamw"

    def __init__(self, encoder: nn.Module, *, mask_ratio: float = 0.75, spatial_mask: bool = False,
                 decoder_dim: int = 512, decoder_depth: int = 8, decoder_heads: int = 16,
                 decoder_channel_embed: int = 128, norm_pix_loss: bool = False, **kw):
        super().__init__(**kw)
        self.encoder = encoder
        self.mask_ratio, self.spatial_mask, self.norm_pix_loss = float(mask_ratio), bool(spatial_mask), bool(norm_pix_loss)
        self.head = SatMAEDecoder(encoder.embed_dim, encoder.channel_groups, encoder.patch_size, encoder.grid_size,
                                  decoder_dim, decoder_depth, decoder_heads, decoder_channel_embed)

    def continue_from(self, obj: dict) -> bool:
        """Load the decoder of a published checkpoint (``obj`` as loaded) when it fits this one."""
        sd = obj.get("model", obj) if isinstance(obj, dict) else {}
        own = self.head.state_dict()
        got = {k: v for k, v in sd.items() if k in own}
        if set(got) != set(own) or any(tuple(v.shape) != tuple(own[k].shape) for k, v in got.items()):
            return False
        self.head.load_state_dict(got)
        return True

    def mask(self, n: int, groups: int, length: int, device) -> torch.Tensor:
        """Indices (N, G, V) of the visible tokens of each group."""
        visible = max(1, int(round(length * (1 - self.mask_ratio))))
        noise = torch.rand(n, 1 if self.spatial_mask else groups, length, generator=self.step_generator())
        noise = noise.to(device).expand(n, groups, length)
        return noise.argsort(dim=2)[..., :visible]

    def loss(self, batch):
        x = batch["image"]
        enc = self.encoder
        n, _, h, w = x.shape
        p = enc.patch_size
        tokens, cls = enc.embed(x)
        _, groups, length, dim = tokens.shape
        keep = self.mask(n, groups, length, x.device)
        visible = tokens.gather(2, keep[..., None].expand(-1, -1, -1, dim))
        latent = enc.encode(torch.cat([cls, visible.reshape(n, -1, dim)], dim=1))
        preds = self.head(latent, keep, length, h // p, w // p)
        masked = torch.ones(n, groups, length, device=x.device)
        masked.scatter_(2, keep, 0.0)
        total = 0.0
        for g, (idx, pred) in enumerate(zip(enc.channel_groups, preds)):
            target = patchify(x[:, list(idx)].float(), p)
            if self.norm_pix_loss:
                target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
            per_patch = ((pred.float() - target) ** 2).mean(-1)
            total = total + (per_patch * masked[:, g]).sum()
        loss = total / masked.sum()
        return loss, {}

    def published(self) -> dict:
        enc = self.encoder
        sd = {k: v.detach().cpu().clone() for k, v in {**enc.state_dict(), **self.head.state_dict()}.items()}
        args = argparse.Namespace(model=f"mae_vit_group_channels_{self.arch}", input_size=self.window,
                                  patch_size=enc.patch_size, mask_ratio=self.mask_ratio,
                                  spatial_mask=self.spatial_mask,
                                  grouped_bands=[list(g) for g in enc.channel_groups])
        return {"model": sd, "args": args, "epoch": int(self.current_epoch)}


def build_mae(model, cfg, start: dict | None, **kw) -> MaeTask:
    """The MAE task for a SatMAE zoo model (its encoder continues), as ``cfg.mae`` says."""
    m = cfg.mae
    task = MaeTask(model.encoder, mask_ratio=m.mask_ratio, spatial_mask=m.spatial_mask, decoder_dim=m.decoder_dim,
                   decoder_depth=m.decoder_depth, decoder_heads=m.decoder_heads,
                   decoder_channel_embed=m.decoder_channel_embed, norm_pix_loss=m.norm_pix_loss, **kw)
    if start is not None and not task.continue_from(start):
        warnings.warn("the start file has no MAE decoder of this size: the decoder is created afresh "
                      "(the encoder itself continues)", stacklevel=2)
    return task
