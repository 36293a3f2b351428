"""DDColor (Kang et al., ICCV 2023; piddnad/DDColor, Apache-2.0), in the key layout of its
released `.pth` files (`{'params': state_dict}`), so they load strictly and unchanged:

  - "ddcolor" (`ddcolor_modelscope.pth`), "ddcolor-paper" (`ddcolor_paper.pth`),
    "ddcolor-artistic" (`ddcolor_artistic.pth`): ConvNeXt-L encoder, 228 M params;
  - "ddcolor-tiny" (`ddcolor_paper_tiny.pth`): ConvNeXt-T encoder, 55 M params.

Written in plain torch after the official `ddcolor/model.py` and `ddcolor_arch_utils/`:
  - encoder: Meta's ConvNeXt (`encoder.arch.*`, layer scale `gamma`); the features are the
    outputs of the channels-first LayerNorms `norm0..norm3` applied to each stage's output
    (the stages themselves chain un-normalised, as the original's hooks see them). The final
    `norm` and the classifier `head_cls` (in the released files, unused by the colorizer) are
    kept as modules so that the files load strictly, and are never run;
  - pixel decoder: three DeOldify wide U-Net blocks (shared with `bttf.models.deoldify`) and a
    spectral 1x1 conv with pixel shuffle x4 and blur to full resolution;
  - colour decoder: 100 colour queries through 9 post-norm transformer layers (cross-attention,
    self-attention, FFN) cycling over the 1/16, 1/8 and 1/4 scales, an MLP, and an einsum of
    the queries with the full-resolution features;
  - refine: the 100 query maps and the normalised input, spectral 1x1 conv -> ab.

`forward(L)` makes the official input (Lab(L, 0, 0) as sRGB in [0, 1], a gray 3-channel image)
and returns the model's ab in Lab units at the input size (H, W multiples of 32). The official
pipeline runs at 512x512; bttf keeps the aspect at the render size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bttf.color import lab_to_rgb
from bttf.models._registry import register_model
from bttf.models.deoldify import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PixelShuffleICNR,
    UnetBlockWide,
    conv_block,
)

CONVNEXT = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
}
HEAD_CLASSES = 4  # `head_cls` in the released files: Linear(width, 4), unused


class LayerNorm2d(nn.Module):
    """ConvNeXt's channels-first LayerNorm over dim 1 of (N, C, H, W), eps 1e-6."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, LayerNorm, 4x MLP with GELU, layer scale, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """Meta's ConvNeXt with DDColor's four feature norms; `forward` returns the normed features
    of the four stages (strides 4, 8, 16, 32)."""

    def __init__(self, size: str = "large") -> None:
        super().__init__()
        depths, dims = CONVNEXT[size]
        stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0]))
        self.downsample_layers = nn.ModuleList(
            [stem]
            + [
                nn.Sequential(LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], dims[i], 2, 2))
                for i in range(1, 4)
            ]
        )
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(dims[i]) for _ in range(depths[i]))) for i in range(4)
        )
        for i in range(4):
            self.add_module(f"norm{i}", LayerNorm2d(dims[i]))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)  # classifier path: kept for the keys
        self.head_cls = nn.Linear(dims[-1], HEAD_CLASSES)  # ditto
        self.dims = dims

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
            features.append(getattr(self, f"norm{i}")(x))
        return features


class Encoder(nn.Module):
    """The official `Encoder` wrapper: only its `arch` holds weights."""

    def __init__(self, size: str) -> None:
        super().__init__()
        self.arch = ConvNeXt(size)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.arch(x)


def sine_position(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """DETR's normalised sine position encoding, 128 features per axis: (256, h, w)."""
    steps, eps, scale = 128, 1e-6, 2 * math.pi
    y = torch.arange(1, h + 1, device=device, dtype=torch.float32)
    x = torch.arange(1, w + 1, device=device, dtype=torch.float32)
    y = (y / (h + eps) * scale)[:, None].expand(h, w)
    x = (x / (w + eps) * scale)[None, :].expand(h, w)
    dim_t = torch.arange(steps, device=device, dtype=torch.float32)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / steps)

    def embed(t: torch.Tensor) -> torch.Tensor:
        p = t[..., None] / dim_t
        return torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=-1).flatten(-2)

    return torch.cat((embed(y), embed(x)), dim=-1).permute(2, 0, 1).to(dtype)


class CrossAttentionLayer(nn.Module):
    def __init__(self, dim: int = 256, heads: int = 8) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt, memory, pos, query_pos) -> torch.Tensor:
        out = self.multihead_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0]
        return self.norm(tgt + out)


class SelfAttentionLayer(nn.Module):
    def __init__(self, dim: int = 256, heads: int = 8) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt, query_pos) -> torch.Tensor:
        q = tgt + query_pos
        return self.norm(tgt + self.self_attn(q, q, tgt, need_weights=False)[0])


class FFNLayer(nn.Module):
    def __init__(self, dim: int = 256, hidden: int = 2048) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


class MLP(nn.Module):
    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class Table(nn.Module):
    """Learned vectors used whole (the official `nn.Embedding`s, key `weight`, never looked up).
    Not an `nn.Embedding`: its `normal_` init on the meta device, where a model to be loaded is
    built, makes torch import sympy (1.4 s, once a process); here init is skipped there."""

    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(rows, dim))
        if not self.weight.is_meta:
            nn.init.normal_(self.weight)


class MultiScaleColorDecoder(nn.Module):
    """Colour queries attending to three scales of the pixel decoder in turn."""

    def __init__(
        self,
        in_channels: tuple[int, ...] = (512, 512, 256),
        hidden: int = 256,
        queries: int = 100,
        layers: int = 9,
    ) -> None:
        super().__init__()
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden) for _ in range(layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden) for _ in range(layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer(hidden) for _ in range(layers))
        self.decoder_norm = nn.LayerNorm(hidden)
        self.query_feat = Table(queries, hidden)
        self.query_embed = Table(queries, hidden)
        self.level_embed = Table(len(in_channels), hidden)
        self.input_proj = nn.ModuleList(nn.Conv2d(c, hidden, 1) for c in in_channels)
        self.color_embed = MLP(hidden, 3)

    def forward(self, scales: list[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        """scales: feature maps (N, C_i, h_i, w_i); image: (N, 256, H, W) -> (N, 100, H, W)."""
        src, pos = [], []
        for i, x in enumerate(scales):
            p = sine_position(x.shape[-2], x.shape[-1], x.device, x.dtype)
            pos.append(p.flatten(1).t()[:, None, :])  # (hw, 1, C), broadcast over the batch
            s = self.input_proj[i](x).flatten(2) + self.level_embed.weight[i][None, :, None]
            src.append(s.permute(2, 0, 1))
        batch = image.shape[0]
        query_pos = self.query_embed.weight[:, None, :].expand(-1, batch, -1)
        out = self.query_feat.weight[:, None, :].expand(-1, batch, -1)
        for i in range(len(self.transformer_ffn_layers)):
            level = i % len(scales)
            memory_pos = pos[level].expand(-1, batch, -1)
            out = self.transformer_cross_attention_layers[i](out, src[level], memory_pos, query_pos)
            out = self.transformer_self_attention_layers[i](out, query_pos)
            out = self.transformer_ffn_layers[i](out)
        colors = self.color_embed(self.decoder_norm(out).transpose(0, 1))
        return torch.einsum("bqc,bchw->bqhw", colors, image)


class Decoder(nn.Module):
    """Pixel decoder (U-Net blocks at 1/16, 1/8, 1/4, then x4 to full size) + colour decoder."""

    def __init__(self, dims: tuple[int, ...], nf: int = 512, queries: int = 100) -> None:
        super().__init__()
        outs = (nf, nf, nf // 2)
        ins = (dims[3], nf, nf)
        self.layers = nn.Sequential(
            *(UnetBlockWide(ins[i], dims[2 - i], outs[i], outs[i]) for i in range(3))
        )
        self.last_shuf = PixelShuffleICNR(nf // 2, nf // 2, scale=4, batchnorm=False)
        self.color_decoder = MultiScaleColorDecoder(in_channels=outs, queries=queries)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[3]
        scales = []
        for i, block in enumerate(self.layers):
            x = block(x, features[2 - i])
            scales.append(x)
        return self.color_decoder(scales, self.last_shuf(x))


class DDColor(nn.Module):
    """DDColor: L (N, 1, H, W) in [0, 100], H and W multiples of 32 -> ab (N, 2, H, W).

    Args:
        size: "large" (ConvNeXt-L) or "tiny" (ConvNeXt-T).
    """

    def __init__(self, size: str = "large") -> None:
        super().__init__()
        if size not in CONVNEXT:
            raise ValueError(f"size must be one of {sorted(CONVNEXT)}, got {size!r}")
        self.encoder = Encoder(size)
        self.decoder = Decoder(self.encoder.arch.dims)
        self.refine_net = nn.Sequential(conv_block(103, 2, 1, activ=False, batchnorm=False))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def colorize(self, rgb: torch.Tensor) -> torch.Tensor:
        """The official forward: gray sRGB (N, 3, H, W) in [0, 1] -> ab (N, 2, H, W), Lab units."""
        x = (rgb - self.mean) / self.std
        out = self.decoder(self.encoder(x))
        return self.refine_net(torch.cat([out, x], dim=1))

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        """L (N, 1, H, W) in [0, 100] -> ab (N, 2, H, W).

        Under float16 autocast the model runs in float32 (DDColor is not made for fp16: its
        authors say so, and the einsum of 100 queries with the features can overflow it);
        bfloat16 autocast is kept.
        """
        zeros = torch.zeros_like(L)
        rgb = lab_to_rgb(torch.cat([L, zeros, zeros], dim=1))
        device = L.device.type
        if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16:
            with torch.autocast(device, enabled=False):
                return self.colorize(rgb.float())
        return self.colorize(rgb)


_DESCRIPTION = "DDColor {} (ConvNeXt-{}, {} M params; {})"


@register_model(
    "ddcolor",
    output="ab",
    cpu_s_360p=8.1,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=32,
    render_size=512,
    description=_DESCRIPTION.format("ModelScope", "L", 228, "ddcolor_modelscope.pth"),
)
def ddcolor(**kw) -> DDColor:
    """DDColor, ConvNeXt-L, the ModelScope-trained weights."""
    return DDColor("large", **kw)


@register_model(
    "ddcolor-paper",
    output="ab",
    cpu_s_360p=7.3,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=32,
    render_size=512,
    description=_DESCRIPTION.format("paper", "L", 228, "ddcolor_paper.pth"),
)
def ddcolor_paper(**kw) -> DDColor:
    """DDColor, ConvNeXt-L, the paper's weights."""
    return DDColor("large", **kw)


@register_model(
    "ddcolor-artistic",
    output="ab",
    cpu_s_360p=7.3,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=32,
    render_size=512,
    description=_DESCRIPTION.format("artistic", "L", 228, "ddcolor_artistic.pth"),
)
def ddcolor_artistic(**kw) -> DDColor:
    """DDColor, ConvNeXt-L, the artistic weights."""
    return DDColor("large", **kw)


@register_model(
    "ddcolor-tiny",
    output="ab",
    cpu_s_360p=6.0,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=32,
    render_size=512,
    description=_DESCRIPTION.format("tiny", "T", 55, "ddcolor_paper_tiny.pth"),
)
def ddcolor_tiny(**kw) -> DDColor:
    """DDColor, ConvNeXt-T, the paper's tiny weights."""
    return DDColor("tiny", **kw)
