"""Augmentations as whole-batch tensor operations (no per-sample Python), on the batch's device.

Each is optional (AugmentConfig); all draw their randomness from one ``torch.Generator`` so a
(seed, epoch) pair reproduces the epoch exactly.

* pad-4 random crop + horizontal flip (seed 004): zero-pad by ``crop_padding`` and cut an HxW window
  at a random offset per image (a gather), flip by ``torch.where`` on a random mask.
* RandomResizedCrop (seed 001): a random box per image (area fraction in ``rrc_scale``, aspect
  ratio log-uniform in ``rrc_ratio``) resampled to HxW with one ``grid_sample``.
* random rotation / translation / scaling (seed 002): one random affine per image, one ``grid_sample``.
* elastic distortion (seed 003, Simard et al. 2003): a random displacement field per image,
  smoothed with a Gaussian of ``elastic_sigma`` pixels and scaled by ``elastic_alpha`` pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from core.data.base import DataError, checked_options


@dataclass
class AugmentConfig:
    crop_padding: int = 0                 # > 0: pad-N random crop (seed 004 uses 4)
    hflip: bool = False                   # random horizontal flip, p = 0.5
    random_resized_crop: bool = False
    rrc_scale: tuple[float, float] = (0.35, 1.0)     # area fraction; torchvision's 0.08 is harsh at 32 px
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rotate_degrees: float = 0.0           # rotation uniform in [-d, d]
    translate: float = 0.0                # shift uniform in [-t, t] x image size
    scale: tuple[float, float] = (1.0, 1.0)   # zoom factor uniform in this range
    elastic: bool = False
    elastic_alpha: float = 8.0            # displacement magnitude, pixels
    elastic_sigma: float = 3.0            # smoothness of the displacement field, pixels

    PRESETS = ("none", "crop-flip", "rrc-flip", "affine", "elastic")

    @classmethod
    def preset(cls, name: str) -> "AugmentConfig":
        """Named settings used by the seeds: none, crop-flip (004), rrc-flip (001), affine (002), elastic (003)."""
        table = {
            "none": cls(),
            "crop-flip": cls(crop_padding=4, hflip=True),
            "rrc-flip": cls(random_resized_crop=True, hflip=True),
            "affine": cls(rotate_degrees=30.0, translate=0.1, scale=(0.8, 1.2)),
            "elastic": cls(elastic=True),
        }
        if name not in table:
            raise DataError(f"unknown augmentation preset {name!r}: expected one of {', '.join(table)}")
        return table[name]

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("rrc_scale", "rrc_ratio", "scale"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "AugmentConfig":
        d = checked_options(cls, d, "augmentation")
        for k in ("rrc_scale", "rrc_ratio", "scale"):
            if k in d:
                d[k] = tuple(float(v) for v in d[k])
        return cls(**d)

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.hflip or self.random_resized_crop or self.rotate_degrees
                    or self.translate or self.scale != (1.0, 1.0) or self.elastic)


def _rand(n: int, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device)


def _uniform(n: int, lo: float, hi: float, g, device) -> torch.Tensor:
    return lo + (hi - lo) * _rand(n, g, device)


def random_crop(x: torch.Tensor, padding: int, g: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` then cut an HxW window at a random offset per image.

    x [B,C,H,W] of any dtype (uint8 is 4x cheaper) -> same. One ``gather`` on the flattened padded
    images: measured ~3x faster on CPU than 4-D advanced indexing."""
    b, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (padding, padding, padding, padding))
    wp = w + 2 * padding
    oy = (_rand(b, g, dev) * (2 * padding + 1)).long().clamp_max(2 * padding)
    ox = (_rand(b, g, dev) * (2 * padding + 1)).long().clamp_max(2 * padding)
    window = (torch.arange(h, device=dev)[:, None] * wp + torch.arange(w, device=dev)[None, :]).view(1, -1)
    index = (window + (oy * wp + ox)[:, None]).unsqueeze(1).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, index).view(b, c, h, w)


def random_hflip(x: torch.Tensor, g: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image left-right with probability p. x [B,C,H,W] -> same."""
    mask = (_rand(x.shape[0], g, x.device) < p).view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(3), x)


def _sample(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_resized_crop(x: torch.Tensor, g: torch.Generator, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """A random box per image (area fraction in ``scale``, aspect in ``ratio``) resampled to HxW.
    x float [B,C,H,W] -> same shape."""
    b = x.shape[0]
    dev = x.device
    area = _uniform(b, scale[0], scale[1], g, dev)
    log_r = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), g, dev)
    r = torch.exp(log_r)
    bw = torch.sqrt(area * r).clamp(max=1.0)       # box width / image width
    bh = torch.sqrt(area / r).clamp(max=1.0)
    cx = (2 * _rand(b, g, dev) - 1) * (1 - bw)       # centre in normalised coords, box stays inside
    cy = (2 * _rand(b, g, dev) - 1) * (1 - bh)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = bw, cx
    theta[:, 1, 1], theta[:, 1, 2] = bh, cy
    return _sample(x, theta)


def random_affine(x: torch.Tensor, g: torch.Generator, degrees: float = 0.0, translate: float = 0.0,
                  scale=(1.0, 1.0)) -> torch.Tensor:
    """Random rotation (+-degrees), translation (+-translate x size) and zoom per image; zeros outside.
    x float [B,C,H,W] -> same shape."""
    b = x.shape[0]
    dev = x.device
    a = _uniform(b, -degrees, degrees, g, dev) * math.pi / 180
    s = _uniform(b, scale[0], scale[1], g, dev)
    tx = _uniform(b, -translate, translate, g, dev) * 2      # normalised coords span 2
    ty = _uniform(b, -translate, translate, g, dev) * 2
    # affine_grid maps output -> input coordinates: the inverse of "rotate by a, zoom by s, shift by t"
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack([torch.stack([cos, sin, -(cos * tx + sin * ty)], 1),
                         torch.stack([-sin, cos, -(-sin * tx + cos * ty)], 1)], 1).to(x.dtype)
    return _sample(x, theta)


def _gaussian_kernel(sigma: float, device, dtype) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def elastic_distortion(x: torch.Tensor, g: torch.Generator, alpha: float = 8.0, sigma: float = 3.0) -> torch.Tensor:
    """Simard-style elastic distortion: uniform(-1,1) displacements per pixel, Gaussian-smoothed
    (separable conv, ``sigma`` px), scaled to ``alpha`` px, applied with grid_sample.
    x float [B,C,H,W] -> same shape."""
    b, _, h, w = x.shape
    dev = x.device
    disp = torch.rand(b * 2, 1, h, w, generator=g, device=dev, dtype=x.dtype) * 2 - 1
    k = _gaussian_kernel(sigma, dev, x.dtype)
    pad = len(k) // 2
    disp = F.conv2d(F.pad(disp, (pad, pad, 0, 0), mode="reflect" if pad < w else "replicate"), k.view(1, 1, 1, -1))
    disp = F.conv2d(F.pad(disp, (0, 0, pad, pad), mode="reflect" if pad < h else "replicate"), k.view(1, 1, -1, 1))
    # after smoothing the field's std shrinks a lot: rescale so its max magnitude is ~alpha pixels
    disp = disp / disp.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    disp = disp.view(b, 2, h, w) * alpha
    ys = (torch.arange(h, device=dev, dtype=x.dtype) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=dev, dtype=x.dtype) + 0.5) / w * 2 - 1
    base_y, base_x = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([base_x + disp[:, 0] * 2 / w, base_y + disp[:, 1] * 2 / h], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_shifts(x: torch.Tensor, cfg: AugmentConfig | None, g: torch.Generator) -> torch.Tensor:
    """The integer-shift augmentations (pad-crop, flip) of ``cfg``; any dtype. x [B,C,H,W] -> same."""
    if cfg is None:
        return x
    if cfg.crop_padding:
        x = random_crop(x, int(cfg.crop_padding), g)
    if cfg.hflip:
        x = random_hflip(x, g)
    return x


def augment_resample(x: torch.Tensor, cfg: AugmentConfig | None, g: torch.Generator) -> torch.Tensor:
    """The resampling augmentations (random-resized-crop, affine, elastic) of ``cfg``; float x [B,C,H,W] -> same."""
    if cfg is None:
        return x
    if (cfg.random_resized_crop or cfg.rotate_degrees or cfg.translate or tuple(cfg.scale) != (1.0, 1.0)
            or cfg.elastic) and not x.is_floating_point():
        raise DataError("resampling augmentations need a float batch (convert uint8 with .float() / 255 first)")
    if cfg.random_resized_crop:
        x = random_resized_crop(x, g, cfg.rrc_scale, cfg.rrc_ratio)
    if cfg.rotate_degrees or cfg.translate or tuple(cfg.scale) != (1.0, 1.0):
        x = random_affine(x, g, cfg.rotate_degrees, cfg.translate, cfg.scale)
    if cfg.elastic:
        x = elastic_distortion(x, g, cfg.elastic_alpha, cfg.elastic_sigma)
    return x


def apply_augment(x: torch.Tensor, cfg: AugmentConfig | None, g: torch.Generator) -> torch.Tensor:
    """Apply every enabled augmentation of ``cfg`` to a float batch [B,C,H,W] -> same shape.

    Order: pad-crop, flip (cheap integer shifts; BatchLoader runs them on uint8), then
    random-resized-crop, affine, elastic (bilinear resampling)."""
    if cfg is None or not cfg.active:
        return x
    return augment_resample(augment_shifts(x, cfg, g), cfg, g)
