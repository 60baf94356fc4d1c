"""Preprocessing done once per dataset (resize, cached OpenCV denoising) and the per-batch
normalisations (dataset statistics, per-image standardisation).

Order, following seed 000 ("Resizing -> Denoising -> Normalization"): decode -> resize ->
non-local-means denoise (cached on disk) -> [per batch] augment -> normalise -> channels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.data.base import DataError, TensorSplit, cache_dir, checked_options, stable_key


@dataclass
class PreprocessConfig:
    """Dataset-level preprocessing (applied once at load, results cached).

    denoise: OpenCV non-local-means (cv2.fastNlMeansDenoisingColored for 3 channels,
    cv2.fastNlMeansDenoising for 1), with OpenCV's parameter names: h (luminance strength),
    h_color (colour strength), template_window, search_window (odd pixel sizes).
    """

    denoise: bool = False
    h: float = 10.0
    h_color: float = 10.0
    template_window: int = 7
    search_window: int = 21

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "PreprocessConfig":
        d = checked_options(cls, d, "preprocessing")
        return cls(**d)

    def validate(self) -> None:
        for name in ("template_window", "search_window"):
            v = getattr(self, name)
            if int(v) != v or v < 1 or v % 2 == 0:
                raise DataError(f"preprocess.{name} must be an odd positive integer, got {v!r}")
        if self.h < 0 or self.h_color < 0:
            raise DataError(f"preprocess.h and h_color must be >= 0, got {self.h}, {self.h_color}")


# --------------------------------------------------------------------------- resize

def resize_images(images: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """Resize uint8 [N, C, H, W] to uint8 [N, C, size, size] (bilinear with antialiasing, in chunks)."""
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    if size < 1:
        raise DataError(f"image_size must be >= 1, got {size}")
    out = torch.empty(n, c, size, size, dtype=torch.uint8)
    for i in range(0, n, chunk):
        x = images[i:i + chunk].float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i:i + chunk] = y.round().clamp(0, 255).to(torch.uint8)
    return out


# --------------------------------------------------------------------------- denoise (cached)

def _denoise_array(img: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """One image, uint8 HxWx3 RGB or HxW gray -> same shape."""
    import cv2

    if img.ndim == 2:
        return cv2.fastNlMeansDenoising(img, None, float(cfg.h), int(cfg.template_window), int(cfg.search_window))
    # OpenCV's colour variant converts BGR -> Lab internally: hand it BGR, give back RGB
    bgr = np.ascontiguousarray(img[:, :, ::-1])
    out = cv2.fastNlMeansDenoisingColored(bgr, None, float(cfg.h), float(cfg.h_color),
                                          int(cfg.template_window), int(cfg.search_window))
    return np.ascontiguousarray(out[:, :, ::-1])


def denoise_cache_path(dataset: str, split: str, images: torch.Tensor, cfg: PreprocessConfig):
    """Cache file for (dataset, split, parameters, content of the images): changing any of them misses."""
    content = _tensor_digest(images)
    params = {k: v for k, v in cfg.to_dict().items() if k != "denoise"}
    key = stable_key({"dataset": dataset, "split": split, "params": params, "content": content,
                      "shape": list(images.shape)})
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in dataset)[:60]
    return cache_dir("denoise") / f"{safe}-{split}-{key}.safetensors"


def _tensor_digest(t: torch.Tensor) -> str:
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def denoise_images(images: torch.Tensor, cfg: PreprocessConfig, *, dataset: str, split: str,
                   use_cache: bool = True) -> tuple[torch.Tensor, dict]:
    """Non-local-means denoise every image of uint8 [N, C, H, W] (C = 1 or 3); cached on disk.

    The key is the dataset name, the split, the parameters and a digest of the input pixels, so a
    second call with the same inputs reads the cache file and does no denoising.
    Returns (uint8 [N, C, H, W], {"cache_file", "cache_hit"}).
    """
    from safetensors.torch import load_file, save_file

    from core.io import atomic_write

    cfg.validate()
    path = denoise_cache_path(dataset, split, images, cfg)
    if use_cache and path.exists():
        try:
            out = load_file(str(path))["images"]
            if out.shape == images.shape and out.dtype == torch.uint8:
                return out, {"cache_file": str(path), "cache_hit": True}
        except Exception:  # unreadable cache: recompute and overwrite
            pass
    arr = images.permute(0, 2, 3, 1).contiguous().numpy()          # N,H,W,C for OpenCV
    out = np.empty_like(arr)
    for i in range(arr.shape[0]):   # OpenCV works per image; this runs once, then the cache answers
        img = arr[i] if arr.shape[3] == 3 else arr[i, :, :, 0]
        res = _denoise_array(np.ascontiguousarray(img), cfg)
        out[i] = res if res.ndim == 3 else res[:, :, None]
    result = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    if use_cache:
        atomic_write(path, lambda tmp: save_file({"images": result}, tmp))
    return result, {"cache_file": str(path) if use_cache else None, "cache_hit": False}


# --------------------------------------------------------------------------- statistics

def compute_normalization(split: TensorSplit | torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a (training) split, in [0, 1] units.

    split: TensorSplit or uint8 [N, C, H, W]. Returns (mean [C], std [C]) as lists of floats,
    computed in float64 over all pixels (chunked: no float copy of the whole dataset).
    """
    images = split.images if isinstance(split, TensorSplit) else split
    if images.dim() != 4 or images.shape[0] == 0:
        raise DataError(f"compute_normalization needs a non-empty [N,C,H,W] tensor, got {tuple(images.shape)}")
    c = images.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    ss = torch.zeros(c, dtype=torch.float64)
    count = 0
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].to(torch.float64) / 255.0
        s += x.sum(dim=(0, 2, 3))
        ss += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / count
    var = (ss / count - mean * mean).clamp_min(0)
    std = var.sqrt().clamp_min(1e-6)
    return [float(v) for v in mean], [float(v) for v in std]


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel. x float [B, C, H, W]; mean/std sequences of length C."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if m.shape[1] != x.shape[1]:
        raise DataError(f"normalize: {m.shape[1]} mean values for {x.shape[1]} channels")
    return (x - m) / s


def standardize_per_image(x: torch.Tensor) -> torch.Tensor:
    """Seed 004's per-image standardisation: each image and channel to zero mean, unit std.

    x float [B, C, H, W] -> same shape. The std is floored at 1/sqrt(H*W) (as TensorFlow's
    per_image_standardization does) so a flat image gives zeros, not a division by zero.
    """
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True, unbiased=False)
    floor = 1.0 / float(x.shape[2] * x.shape[3]) ** 0.5
    return (x - mean) / std.clamp_min(floor)
