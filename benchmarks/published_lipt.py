"""Re-creation of the *published* LIPT implementation, used only as a speed baseline.

LIPT (arXiv 2404.06075, authors' code at github.com/Lucien66/LIPT) is re-implemented here from
``shared/spec/LIPT-architecture.md``: same algorithm, same data layout, same module tree and
parameter names as the published checkpoints, and the same *way of computing* as the published
code (training-time multi-branch convolutions, ``torch.roll`` shifts, sparse resampling through
circular padding + ``unfold`` + boolean masks, window partition via reshape/permute, unscaled
``q @ q^T`` attention). It is deliberately not optimised: its only purpose is to be timed side by
side with our own model ("the published implementation").

Public entry points:

* :func:`build_published_lipt` -- model from a config dict (the reference-vector metadata format).
* :func:`deploy` -- the published conversion (multi-branch convs fused into ``dbb_reparam``),
  plus, by default, folding of each ``project_inp`` conv + BN (the published script does not).
* :func:`load_reference` -- load a ``shared/reference/lipt_*.safetensors`` test vector.

Run as a script to time the deploy form of the published tiny configuration.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

RGB_MEAN = (0.4488, 0.4371, 0.4040)

# --------------------------------------------------------------------------------------------
# Input normalisation
# --------------------------------------------------------------------------------------------


class MeanShift(nn.Conv2d):
    """Fixed 1x1 conv adding ``sign * rgb_range * mean`` per channel (not trained)."""

    def __init__(self, rgb_range: float, sign: int = -1, colors: int = 3) -> None:
        super().__init__(colors, colors, kernel_size=1)
        # Published code supports 3 channels only; for other channel counts use the mean of the
        # RGB means (our choice, see spec section 2).
        mean = torch.tensor(RGB_MEAN) if colors == 3 else torch.full((colors,), sum(RGB_MEAN) / 3)
        self.weight.data = torch.eye(colors).view(colors, colors, 1, 1)
        self.bias.data = sign * rgb_range * mean
        for p in self.parameters():
            p.requires_grad = False


# --------------------------------------------------------------------------------------------
# HRM: DiverseBranchBlock-style multi-branch 3x3 conv with two extra sobel branches
# --------------------------------------------------------------------------------------------


def _bn_zero_response(bn: nn.BatchNorm2d) -> torch.Tensor:
    """Per-channel output of an eval-mode BatchNorm for an all-zero input."""
    std = torch.sqrt(bn.running_var + bn.eps)
    if bn.affine:
        return bn.bias.detach() - bn.running_mean * bn.weight.detach() / std
    return -bn.running_mean / std


def _fill_border(x: torch.Tensor, pad: int, values: torch.Tensor) -> torch.Tensor:
    """Zero-pad ``pad`` pixels on every side, then overwrite the border with ``values[c]``."""
    out = F.pad(x, [pad] * 4)
    v = values.view(1, -1, 1, 1)
    out[:, :, :pad, :] = v
    out[:, :, -pad:, :] = v
    out[:, :, :, :pad] = v
    out[:, :, :, -pad:] = v
    return out


def _fuse_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    std = torch.sqrt(bn.running_var + bn.eps)
    t = bn.weight / std
    return kernel * t.view(-1, 1, 1, 1), bn.bias - bn.running_mean * t


def _compose_1x1_kxk(
    k1: torch.Tensor, b1: torch.Tensor, k2: torch.Tensor, b2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """1x1 conv (k1, b1) followed by a kxk conv (k2, b2) as a single kxk conv (groups=1)."""
    k = F.conv2d(k2, k1.permute(1, 0, 2, 3))
    b_hat = (k2 * b1.view(1, -1, 1, 1)).sum((1, 2, 3))
    return k, b_hat + b2


def _center_pad(kernel: torch.Tensor, k: int) -> torch.Tensor:
    p = (k - kernel.shape[-1]) // 2
    return F.pad(kernel, [p] * 4)


class BNAndPadLayer(nn.Module):
    """BatchNorm, then pad the border with the value BN gives for a zero input."""

    def __init__(self, pad_pixels: int, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps=eps)
        self.pad_pixels = pad_pixels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(x)
        if self.pad_pixels > 0:
            out = _fill_border(out, self.pad_pixels, _bn_zero_response(self.bn))
        return out


class IdentityBasedConv1x1(nn.Conv2d):
    """1x1 conv whose effective kernel is a trainable delta (init 0) plus a fixed identity."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, kernel_size=1, bias=False)
        nn.init.zeros_(self.weight)
        self.register_buffer(
            "id_tensor", torch.eye(channels).view(channels, channels, 1, 1), persistent=False
        )

    def get_actual_kernel(self) -> torch.Tensor:
        return self.weight + self.id_tensor.to(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.get_actual_kernel())


class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, padding: int) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(cin, cout, k, padding=padding, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class AvgBranch(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, padding: int) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(cin, cout, 1, bias=False))
        self.add_module("bn", BNAndPadLayer(padding, cout))
        self.add_module("avg", nn.AvgPool2d(k, stride=1, padding=0))
        self.add_module("avgbn", nn.BatchNorm2d(cout))


class OneByOneKxK(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, padding: int) -> None:
        super().__init__()
        self.idconv1 = IdentityBasedConv1x1(cin)
        self.bn1 = BNAndPadLayer(padding, cin)
        self.conv2 = nn.Conv2d(cin, cout, k, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.bn1(self.idconv1(x))))


SOBEL_X = (
    (1.0, 0.0, -1.0),
    (math.sqrt(2.0), 0.0, -math.sqrt(2.0)),
    (1.0, 0.0, -1.0),
)


class SeqConvSobel(nn.Module):
    """1x1 conv (k0, b0) -> pad with b0 -> depthwise 3x3 ``scale * mask`` + bias."""

    def __init__(self, cin: int, cout: int, direction: str) -> None:
        super().__init__()
        conv0 = nn.Conv2d(cin, cout, kernel_size=1)
        self.k0 = nn.Parameter(conv0.weight.detach().clone())
        self.b0 = nn.Parameter(conv0.bias.detach().clone())
        self.scale = nn.Parameter(torch.randn(cout, 1, 1, 1) * 1e-3)
        self.bias = nn.Parameter(torch.randn(cout) * 1e-3)
        s = torch.tensor(SOBEL_X)
        if direction == "y":
            s = s.t().contiguous()
        elif direction != "x":
            raise ValueError(f"unknown sobel direction {direction!r}")
        self.mask = nn.Parameter(s.expand(cout, 1, 3, 3).clone(), requires_grad=False)
        self.out_planes = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0 = F.conv2d(x, self.k0, self.b0)
        y0 = _fill_border(y0, 1, self.b0)
        return F.conv2d(y0, self.scale * self.mask, self.bias, groups=self.out_planes)

    def rep_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        tmp = (self.scale * self.mask)[:, 0]  # (cout, 3, 3)
        k = tmp.unsqueeze(1) * self.k0  # (cout, cin, 3, 3)
        b = self.b0 * tmp.sum((1, 2)) + self.bias
        return k, b


class DiverseBranchBlock(nn.Module):
    """Training-form 3x3 conv of an HRM: origin + 1x1 + avg + 1x1-kxk + sobel-x + sobel-y."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = cin, cout, kernel_size
        padding = kernel_size // 2
        self.padding = padding
        self.dbb_origin = ConvBN(cin, cout, kernel_size, padding)
        self.dbb_avg = AvgBranch(cin, cout, kernel_size, padding)
        self.dbb_1x1 = ConvBN(cin, cout, 1, 0)
        self.dbb_1x1_kxk = OneByOneKxK(cin, cout, kernel_size, padding)
        self.dbb_sobelx = SeqConvSobel(cin, cout, "x")
        self.dbb_sobely = SeqConvSobel(cin, cout, "y")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "dbb_reparam"):
            return self.dbb_reparam(x)
        out = self.dbb_origin(x)
        out = out + self.dbb_1x1(x)
        out = out + self.dbb_avg(x)
        out = out + self.dbb_1x1_kxk(x)
        out = out + self.dbb_sobelx(x)
        out = out + self.dbb_sobely(x)
        return out

    @torch.no_grad()
    def get_equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.kernel_size
        k_origin, b_origin = _fuse_bn(self.dbb_origin.conv.weight, self.dbb_origin.bn)

        k_1x1, b_1x1 = _fuse_bn(self.dbb_1x1.conv.weight, self.dbb_1x1.bn)
        k_1x1 = _center_pad(k_1x1, k)

        k1, b1 = _fuse_bn(self.dbb_1x1_kxk.idconv1.get_actual_kernel(), self.dbb_1x1_kxk.bn1.bn)
        k2, b2 = _fuse_bn(self.dbb_1x1_kxk.conv2.weight, self.dbb_1x1_kxk.bn2)
        k_1x1_kxk, b_1x1_kxk = _compose_1x1_kxk(k1, b1, k2, b2)

        ka1, ba1 = _fuse_bn(self.dbb_avg.conv.weight, self.dbb_avg.bn.bn)
        avg = torch.zeros(self.out_channels, self.out_channels, k, k, dtype=ka1.dtype)
        idx = torch.arange(self.out_channels)
        avg[idx, idx] = 1.0 / (k * k)
        ka2, ba2 = _fuse_bn(avg.to(ka1.device), self.dbb_avg.avgbn)
        k_avg, b_avg = _compose_1x1_kxk(ka1, ba1, ka2, ba2)

        k_sx, b_sx = self.dbb_sobelx.rep_params()
        k_sy, b_sy = self.dbb_sobely.rep_params()

        kernel = k_origin + k_1x1 + k_1x1_kxk + k_avg + k_sx + k_sy
        bias = b_origin + b_1x1 + b_1x1_kxk + b_avg + b_sx + b_sy
        return kernel, bias

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        if hasattr(self, "dbb_reparam"):
            return
        kernel, bias = self.get_equivalent_kernel_bias()
        self.dbb_reparam = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, padding=self.padding, bias=True
        ).to(kernel.device)
        self.dbb_reparam.weight.data = kernel
        self.dbb_reparam.bias.data = bias
        for name in (
            "dbb_origin",
            "dbb_avg",
            "dbb_1x1",
            "dbb_1x1_kxk",
            "dbb_sobelx",
            "dbb_sobely",
        ):
            delattr(self, name)


class HRM(nn.Module):
    """High-frequency reparameterization module: DBB(C -> C*r) -> ReLU -> DBB(C*r -> C)."""

    def __init__(self, channels: int, r_expand: int) -> None:
        super().__init__()
        self.conv0 = DiverseBranchBlock(channels, channels * r_expand)
        self.act = nn.ReLU()
        self.conv1 = DiverseBranchBlock(channels * r_expand, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.act(self.conv0(x)))


# --------------------------------------------------------------------------------------------
# NVSM-SA
# --------------------------------------------------------------------------------------------


def sparse_mask(w: int) -> torch.Tensor:
    """Boolean mask over 2w offsets selecting off(k)=2k (k<w/2), 2k+1 (k>=w/2)."""
    offs = [2 * k if k < w // 2 else 2 * k + 1 for k in range(w)]
    m = torch.zeros(2 * w, dtype=torch.bool)
    m[offs] = True
    return m


def sparse_resample(x: torch.Tensor, w: int, mask: torch.Tensor) -> torch.Tensor:
    """Published sparse resampling: circular pad by w (bottom/right), unfold 2w x 2w windows
    with stride w, keep every other row/column with a boolean mask, lay windows back out."""
    b, c, h, wd = x.shape
    nh, nw = h // w, wd // w
    xp = F.pad(x, (0, w, 0, w), mode="circular")
    patches = F.unfold(xp, kernel_size=2 * w, stride=w)  # b, c*2w*2w, nh*nw
    patches = patches.view(b, c, 2 * w, 2 * w, nh * nw)
    patches = patches[:, :, mask][:, :, :, mask]  # b, c, w, w, nh*nw
    # 'b c dh dw (h w) -> b c (h dh) (w dw)'
    patches = patches.reshape(b, c, w, w, nh, nw).permute(0, 1, 4, 2, 5, 3)
    return patches.reshape(b, c, h, wd)


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """'b c (h dh) (w dw) -> (b h w) (dh dw) c'."""
    b, c, h, wd = x.shape
    x = x.view(b, c, h // w, w, wd // w, w).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b * (h // w) * (wd // w), w * w, c)


def window_partition_qv(x: torch.Tensor, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """'b (qv c) (h dh) (w dw) -> qv (b h w) (dh dw) c' with qv=2."""
    b, c2, h, wd = x.shape
    c = c2 // 2
    x = x.view(b, 2, c, h // w, w, wd // w, w).permute(1, 0, 3, 5, 4, 6, 2)
    x = x.reshape(2, b * (h // w) * (wd // w), w * w, c)
    return x[0], x[1]


def window_reverse(y: torch.Tensor, w: int, b: int, h: int, wd: int) -> torch.Tensor:
    """'(b h w) (dh dw) c -> b c (h dh) (w dw)'."""
    c = y.shape[-1]
    y = y.view(b, h // w, wd // w, w, w, c).permute(0, 5, 1, 3, 2, 4)
    return y.reshape(b, c, h, wd)


class NVSMSA(nn.Module):
    """Non-volatile sparse masking self-attention (half 0 dense, half 1 sparse)."""

    def __init__(
        self, channels: int, shifts: int, window_sizes: list[int], calc_attn: bool = True
    ) -> None:
        super().__init__()
        self.channels = channels
        self.shifts = shifts
        self.window_sizes = list(window_sizes)
        self.calc_attn = calc_attn
        if calc_attn:
            self.split_chns = [channels, channels]
            out_inp = channels * 2
        else:
            self.split_chns = [channels // 2, channels // 2]
            out_inp = channels
        self.project_inp = nn.Sequential(
            nn.Conv2d(channels, out_inp, kernel_size=1), nn.BatchNorm2d(out_inp)
        )
        self.project_out = nn.Conv2d(channels, channels, kernel_size=1)
        for idx, w in enumerate(self.window_sizes):
            self.register_buffer(f"mask_{idx}", sparse_mask(w), persistent=False)

    def forward(
        self, x: torch.Tensor, prev_atns: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, _, h, wd = x.shape
        x = self.project_inp(x)
        xs = torch.split(x, self.split_chns, dim=1)
        ys = []
        atns = []
        for idx, x_ in enumerate(xs):
            w = self.window_sizes[idx]
            if self.shifts > 0:
                x_ = torch.roll(x_, shifts=(-w // 2, -w // 2), dims=(2, 3))
            if prev_atns is None:
                if idx == 1:
                    x_ = sparse_resample(x_, w, getattr(self, f"mask_{idx}"))
                q, v = window_partition_qv(x_, w)
                atn = q @ q.transpose(-2, -1)
                atn = atn.softmax(dim=-1)
            else:
                atn = prev_atns[idx]
                v = window_partition(x_, w)
            y_ = atn @ v
            y_ = window_reverse(y_, w, b, h, wd)
            if self.shifts > 0:
                y_ = torch.roll(y_, shifts=(w // 2, w // 2), dims=(2, 3))
            ys.append(y_)
            atns.append(atn)
        y = torch.cat(ys, dim=1)
        y = self.project_out(y)
        return y, (atns if prev_atns is None else prev_atns)

    @torch.no_grad()
    def fold_project_inp(self) -> None:
        """Fold project_inp's BN into its conv (kept as ``project_inp.0``)."""
        conv, bn = self.project_inp[0], self.project_inp[1]
        if not isinstance(bn, nn.BatchNorm2d):
            return
        std = torch.sqrt(bn.running_var + bn.eps)
        t = bn.weight / std
        conv.weight.data = conv.weight * t.view(-1, 1, 1, 1)
        conv.bias.data = bn.bias + (conv.bias - bn.running_mean) * t
        self.project_inp[1] = nn.Identity()


# --------------------------------------------------------------------------------------------
# Blocks and network
# --------------------------------------------------------------------------------------------


class LIPTBlock(nn.Module):
    def __init__(
        self, channels: int, r_expand: int, shifts: int, window_sizes: list[int], shared_depth: int
    ) -> None:
        super().__init__()
        self.shared_depth = shared_depth
        self.modules_hrm_a = nn.ModuleDict()
        self.modules_hrm_c = nn.ModuleDict()
        self.modules_nvsm_sa = nn.ModuleDict()
        self.modules_hrm_b = nn.ModuleDict()
        for j in range(1 + shared_depth):
            self.modules_hrm_a[f"lcs_a_{j}"] = HRM(channels, r_expand)
            self.modules_hrm_c[f"lcs_c_{j}"] = HRM(channels, r_expand)
            self.modules_nvsm_sa[f"smmsa_{j}"] = NVSMSA(
                channels, shifts, window_sizes, calc_attn=(j == 0)
            )
            self.modules_hrm_b[f"lcs_b_{j}"] = HRM(channels, r_expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        atn = None
        for j in range(1 + self.shared_depth):
            x = self.modules_hrm_a[f"lcs_a_{j}"](x) + x
            x = self.modules_hrm_c[f"lcs_c_{j}"](x) + x
            y, atn = self.modules_nvsm_sa[f"smmsa_{j}"](x, atn)
            x = y + x
            x = self.modules_hrm_b[f"lcs_b_{j}"](x) + x
        return x


class PublishedLIPT(nn.Module):
    def __init__(
        self,
        scale: int,
        colors: int = 3,
        m_elan: int = 8,
        c_elan: int = 24,
        n_share: int = 1,
        r_expand: int = 1,
        window_sizes: list[int] | tuple[int, ...] = (8, 8),
        rgb_range: float = 255,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.colors = colors
        self.window_sizes = list(window_sizes)
        self.sub_mean = MeanShift(rgb_range, sign=-1, colors=colors)
        self.add_mean = MeanShift(rgb_range, sign=1, colors=colors)
        self.head = nn.Sequential(nn.Conv2d(colors, c_elan, kernel_size=3, padding=1))
        blocks = []
        for i in range(m_elan // (1 + n_share)):
            shifts = 0 if i % 2 == 0 else 1
            blocks.append(LIPTBlock(c_elan, r_expand, shifts, self.window_sizes, n_share))
        self.body = nn.Sequential(*blocks)
        tail: list[nn.Module] = [
            nn.Conv2d(c_elan, colors * scale * scale, kernel_size=3, padding=1)
        ]
        if scale > 1:
            tail.append(nn.PixelShuffle(scale))
        self.tail = nn.Sequential(*tail)

    def check_image_size(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        wsize = self.window_sizes[0]
        for ws in self.window_sizes[1:]:
            wsize = wsize * ws // math.gcd(wsize, ws)
        mod_pad_h = (wsize - h % wsize) % wsize
        mod_pad_w = (wsize - w % wsize) % wsize
        return F.pad(x, (0, mod_pad_w, 0, mod_pad_h), mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        x = self.check_image_size(x)
        x = self.sub_mean(x)
        x = self.head(x)
        res = self.body(x)
        res = res + x
        x = self.tail(res)
        x = self.add_mean(x)
        return x[:, :, : h * self.scale, : w * self.scale]


def published_config(config) -> dict:
    """The published configuration dict of one of our `LIPTConfig`s (same network)."""
    return {
        "scale": config.scale,
        "colors": config.colors,
        "m_elan": config.num_stages,
        "c_elan": config.channels,
        "n_share": config.n_share,
        "r_expand": config.r_expand,
        "window_sizes": [config.window_size, config.window_size],
        "rgb_range": config.rgb_range,
    }


def build_published_lipt(config: dict) -> PublishedLIPT:
    """Build the published-layout LIPT from a config dict (reference-metadata format)."""
    return PublishedLIPT(
        scale=int(config["scale"]),
        colors=int(config.get("colors", 3)),
        m_elan=int(config["m_elan"]),
        c_elan=int(config["c_elan"]),
        n_share=int(config["n_share"]),
        r_expand=int(config["r_expand"]),
        window_sizes=list(config["window_sizes"]),
        rgb_range=float(config.get("rgb_range", 255)),
    )


def deploy(model: nn.Module, fold_project_inp: bool = True) -> nn.Module:
    """Convert in place to the inference form.

    Every multi-branch conv is fused into one ``dbb_reparam`` conv, as the published conversion
    script does; with ``fold_project_inp`` (default) each NVSM-SA ``project_inp`` BN is also
    folded into its conv (the published script leaves it). ``fold_project_inp=False`` gives the
    published deploy form exactly.
    """
    for m in list(model.modules()):
        if isinstance(m, DiverseBranchBlock):
            m.switch_to_deploy()
        elif fold_project_inp and isinstance(m, NVSMSA):
            m.fold_project_inp()
    return model


def load_reference(
    path: str | Path,
) -> tuple[PublishedLIPT, torch.Tensor, torch.Tensor, dict]:
    """Load a reference test vector: (model in eval mode with its weights, input, output, config).

    ``sd.*`` tensors are the published state dict without the DataParallel ``module.`` prefix."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        config = json.loads(meta["config"])
        keys = f.keys()
        sd = {k[3:]: f.get_tensor(k) for k in keys if k.startswith("sd.")}
        inp = f.get_tensor("input")
        out = f.get_tensor("output")
    model = build_published_lipt(config)
    model.load_state_dict(sd, strict=True)
    model.eval()
    return model, inp, out, config


TINY_CONFIG = {
    "scale": 4,
    "colors": 3,
    "m_elan": 8,
    "c_elan": 24,
    "n_share": 1,
    "r_expand": 1,
    "window_sizes": [8, 8],
    "rgb_range": 255,
}


def _main() -> None:
    import argparse
    import statistics
    import time

    ap = argparse.ArgumentParser(description="Time the published-LIPT baseline (deploy form).")
    ap.add_argument("--height", type=int, default=180)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-fold-project-inp", action="store_true")
    ap.add_argument("--train-form", action="store_true", help="time the multi-branch form")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = build_published_lipt(TINY_CONFIG).eval()
    if not args.train_form:
        deploy(model, fold_project_inp=not args.no_fold_project_inp)
    x = torch.rand(1, 3, args.height, args.width) * 255
    times = []
    with torch.inference_mode():
        for _ in range(args.warmup):
            model(x)
        for _ in range(args.runs):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    print(
        f"published LIPT tiny x4, {args.height}x{args.width}, {args.threads} threads: "
        f"median {statistics.median(times) * 1e3:.1f} ms "
        f"(min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f})"
    )


if __name__ == "__main__":
    _main()
