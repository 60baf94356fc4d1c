"""What a network looks at: class activation maps, attention maps, kernel attention, deformable offsets.

Computing is separate from drawing (as in torchcam): every ``compute_*`` / ``record_*`` function
returns arrays; ``overlay_heatmap`` and ``sampling_points_figure``-style drawing lives in the
caller (the dashboard draws with plotly). Nothing is stored on a module; every hook is
removed when the call returns, whether it succeeded or raised (``hooks_removed_after``).

    x = ...                                      # [1, C, H, W] float, exactly what the model eats
    res = compute_cam(model, x, "Grad-CAM", target_layer="features.3")
    rgb = overlay_heatmap(image_uint8, res.cam)  # [H, W, 3] uint8

Models are shared between dashboard sessions (st.cache_resource), so every function here that
registers hooks on a model or switches it to eval mode holds that model's lock (``model_lock``)
while it does; core.predict.Predictor takes the same lock around its forwards.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import InvalidInputError
from core.analysis.recorder import Recorder

# One lock per model, not one per process: what must not overlap is two uses of the SAME model
# (torchcam raises when a second extractor is created while another's hooks are live on it;
# hooks added for one session would fire in another session's forward; eval mode is switched and
# restored). torchcam keeps no state shared between models and grad mode is per thread, so
# extractions on different models (two runs side by side on the Explain page) may run at once.
# Reentrant: a Predictor holds it around a call that takes it again.
_MODEL_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock that every hook-registering or mode-switching use of ``model`` holds (one per model,
    created on first use, gone with the model)."""
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.RLock()
        return lock


CAM_METHODS = ("Grad-CAM", "Grad-CAM++", "Score-CAM", "Layer-CAM")


class ExplainError(InvalidInputError):
    """A user-fixable problem (wrong layer name, model without the requested kind of layer)."""


# ---------------------------------------------------------------------------------------------
# Hook hygiene
# ---------------------------------------------------------------------------------------------
def _hook_dicts(module: nn.Module) -> list[dict]:
    return [
        module._forward_hooks, module._forward_pre_hooks, module._backward_hooks,
        getattr(module, "_backward_pre_hooks", {}), getattr(module, "_forward_hooks_with_kwargs", {}),
        getattr(module, "_forward_pre_hooks_with_kwargs", {}),
    ]


def count_hooks(model: nn.Module) -> int:
    """Number of forward/backward hooks registered on ``model`` and all its submodules."""
    return sum(len(d) for m in model.modules() for d in _hook_dicts(m) if isinstance(d, dict))


@contextlib.contextmanager
def hooks_removed_after(model: nn.Module) -> Iterator[None]:
    """Remove, on exit (success or error), every hook added to ``model`` inside the block.

    torchcam removes its own hooks in ``__exit__``; this guard also covers a constructor that
    raised half-way through registering, so a failed extraction can never leave a hook behind.
    """
    snapshot = {id(m): [set(d.keys()) for d in _hook_dicts(m)] for m in model.modules()}
    try:
        yield
    finally:
        for m in model.modules():
            old = snapshot.get(id(m), [set()] * 6)
            for d, keys in zip(_hook_dicts(m), old):
                for k in [k for k in d.keys() if k not in keys]:
                    del d[k]


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, was_training in modes:
            m.training = was_training


# ---------------------------------------------------------------------------------------------
# Target layers
# ---------------------------------------------------------------------------------------------
def spatial_layers(model: nn.Module, input_shape: tuple[int, int, int]) -> list[tuple[str, tuple[int, ...]]]:
    """Modules whose output is a 4-D feature map with more than one spatial position.

    Returns [(qualified name, output shape (C, H, W))] in forward order, the candidates for a CAM
    target layer. Found with one dummy forward of shape [1, *input_shape] (hooks removed after).
    """
    found: list[tuple[str, tuple[int, ...]]] = []
    seen: set[str] = set()

    def hook(module, inputs, output, _name: str) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1:
            if _name not in seen and _name:
                seen.add(_name)
                found.append((_name, tuple(output.shape[1:])))

    with model_lock(model), hooks_removed_after(model), _eval_mode(model), torch.no_grad():
        for name, m in model.named_modules():
            if name and not isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
                m.register_forward_hook(lambda mod, i, o, _n=name: hook(mod, i, o, _n))
        p = next(model.parameters(), None)
        model(torch.zeros((1, *input_shape), device=p.device if p is not None else "cpu"))
    return found


def default_target_layer(model: nn.Module, input_shape: tuple[int, int, int]) -> str:
    """The last spatial layer that is not an identity Tap (the usual Grad-CAM choice)."""
    layers = [n for n, _ in spatial_layers(model, input_shape) if "tap" not in n.rsplit(".", 1)[-1].lower()]
    if not layers:
        raise ExplainError("the model has no layer with a spatial output: a CAM cannot be computed")
    return layers[-1]


# ---------------------------------------------------------------------------------------------
# Class activation maps (torchcam)
# ---------------------------------------------------------------------------------------------
@dataclass
class CamResult:
    cam: np.ndarray          # [H, W] float32 in [0, 1], resized to the input's H x W
    raw_cam: np.ndarray      # [h, w] at the target layer's resolution
    class_idx: int           # the class explained
    probs: np.ndarray        # [num_classes] softmax of the logits
    method: str
    target_layer: str


def _extractor(method: str):
    from torchcam import methods  # imported here: torchcam pulls matplotlib, only needed on use

    table = {
        "Grad-CAM": methods.GradCAM,
        "Grad-CAM++": methods.GradCAMpp,
        "Score-CAM": methods.ScoreCAM,
        "Layer-CAM": methods.LayerCAM,
    }
    if method not in table:
        raise ExplainError(f"unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")
    return table[method]


def compute_cam(model: nn.Module, x: torch.Tensor, method: str, target_layer: str,
                class_idx: int | None = None, score_cam_batch_size: int = 16) -> CamResult:
    """Class activation map of one image.

    x: [1, C, H, W] float, already prepared as the model expects (channels, normalisation).
    target_layer: a name from ``model.named_modules()`` (always explicit: torchcam's guess uses a
    3x224x224 dummy input, wrong for our 1-2 channel / 32 px models). class_idx: the class to
    explain; None = the predicted class. Runs under ``model_lock(model)`` in eval mode; every hook
    is gone when this returns or raises.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ExplainError(f"expected one image shaped [1, C, H, W], got {tuple(x.shape)}")
    names = dict(model.named_modules())
    if target_layer not in names:
        raise ExplainError(f"model has no layer named {target_layer!r}; pick one from the layer list")
    cls = _extractor(method)
    kwargs = {"batch_size": score_cam_batch_size} if method == "Score-CAM" else {}
    with model_lock(model), hooks_removed_after(model), _eval_mode(model):
        # Gradient CAMs need autograd even when the caller (a dashboard) runs under no_grad.
        with torch.enable_grad():
            with cls(model, target_layer=target_layer, input_shape=tuple(x.shape[1:]), **kwargs) as extractor:
                logits = model(x)
                if logits.dim() != 2:
                    raise ExplainError(f"model output has shape {tuple(logits.shape)}, expected [1, classes]")
                num_classes = logits.shape[1]
                target = int(logits.argmax(1).item()) if class_idx is None else int(class_idx)
                if not 0 <= target < num_classes:
                    raise ExplainError(f"class index {target} outside [0, {num_classes})")
                cams = extractor(target, logits)
        probs = torch.softmax(logits.detach().float(), dim=1)[0].cpu().numpy()
    raw = cams[0].detach().float()
    if raw.dim() == 3:
        raw = raw[0]
    raw = torch.nan_to_num(raw, nan=0.0)
    up = F.interpolate(raw[None, None], size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
    up = up - up.min()
    up = up / up.max() if float(up.max()) > 0 else up
    return CamResult(cam=up.cpu().numpy().astype(np.float32), raw_cam=raw.cpu().numpy(), class_idx=target,
                     probs=probs, method=method, target_layer=target_layer)


# ---------------------------------------------------------------------------------------------
# Drawing helpers that return arrays
# ---------------------------------------------------------------------------------------------
def colormap(values: np.ndarray, name: str = "jet") -> np.ndarray:
    """[H, W] values in [0, 1] -> [H, W, 3] uint8 colours (matplotlib colormap)."""
    from matplotlib import colormaps

    v = np.clip(np.nan_to_num(np.asarray(values, dtype=float)), 0.0, 1.0)
    return (colormaps[name](v)[..., :3] * 255).round().astype(np.uint8)


def overlay_heatmap(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a [h, w] heat map in [0, 1] over an image [H, W] or [H, W, 3] uint8 -> [H, W, 3] uint8.

    ``alpha`` is the weight of the heat map (0 = image only). The heat map is resized to the
    image with bilinear interpolation.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be [H, W] or [H, W, 3], got {img.shape}")
    h = torch.as_tensor(np.asarray(heat, dtype=np.float32))
    if tuple(h.shape) != img.shape[:2]:
        h = F.interpolate(h[None, None], size=img.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    colours = colormap(h.numpy()).astype(np.float32)
    out = (1 - alpha) * img.astype(np.float32) + alpha * colours
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def channels_as_seen(image01: torch.Tensor | np.ndarray, combo: str) -> np.ndarray:
    """The picture a model trained on ``combo`` sees, for display: [3, H, W] or [1, H, W] in [0, 1]
    -> [H, W, 3] uint8 with the channels outside the combination set to zero ("L": grayscale)."""
    t = torch.as_tensor(np.asarray(image01), dtype=torch.float32)
    if t.dim() != 3:
        raise ValueError(f"expected [C, H, W], got {tuple(t.shape)}")
    if t.shape[0] == 1 or combo == "L":
        g = t.mean(0) if t.shape[0] == 3 else t[0]
        t = g.expand(3, *g.shape)
    else:
        keep = torch.tensor([c in combo.upper() for c in "RGB"], dtype=torch.float32)[:, None, None]
        t = t * keep
    return (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Tap recordings: attention maps, kernel attention
# ---------------------------------------------------------------------------------------------
@dataclass
class TapMap:
    name: str           # qualified Tap name
    kind: str           # Tap kind
    values: np.ndarray  # spatial_attention: [H, W]; channel_attention: [C]; self_attention: [HW, HW];
                        # kernel_attention: [K]; others: the first image's tensor


def record_taps(model: nn.Module, x: torch.Tensor, kinds: Sequence[str] | None = None) -> list[TapMap]:
    """Run one forward of x [1, C, H, W] and return what flowed through the model's Taps (first image)."""
    with model_lock(model), _eval_mode(model), torch.no_grad():
        with Recorder(model, kinds=kinds) as rec:
            model(x)
    out = []
    for r in rec.records:
        t = r.tensor[0]
        if r.kind == "spatial_attention":
            t = t.reshape(t.shape[-2], t.shape[-1]) if t.dim() >= 2 else t
        elif r.kind in ("channel_attention", "kernel_attention"):
            t = t.reshape(-1)
        out.append(TapMap(r.name, r.kind, t.numpy()))
    return out


def kernel_attention_by_combo(model: nn.Module, prepare: Callable[[str], torch.Tensor],
                              combos: Sequence[str]) -> "list[dict]":
    """Mean kernel-attention weight of every dynamic-conv layer for each channel combination.

    prepare(combo) -> x [B, C', H, W]: the same images prepared for that combination (e.g. the
    'drop' strategy, so C' = len(combo)). Returns rows {combo, layer, kernel, weight} (weights of
    one layer average to 1/K over kernels because each row is a softmax). Raises ExplainError when
    the model has no "kernel_attention" Tap.
    """
    rows: list[dict] = []
    for combo in combos:
        x = prepare(combo)
        with model_lock(model), _eval_mode(model), torch.no_grad():
            with Recorder(model, kinds={"kernel_attention"}) as rec:
                if not rec.taps():
                    raise ExplainError("this model has no dynamic convolution (no kernel-attention tap)")
                model(x)
        for r in rec.records:
            w = r.tensor.reshape(r.tensor.shape[0], -1).mean(0)
            for k, v in enumerate(w.tolist()):
                rows.append({"combo": combo, "layer": r.name, "kernel": k, "weight": float(v)})
    return rows


# ---------------------------------------------------------------------------------------------
# Deformable convolution: sampling points, modulation, offset magnitude
# ---------------------------------------------------------------------------------------------
def deform_sampling_points(offset: torch.Tensor | np.ndarray, out_y: int, out_x: int,
                           kernel_size: tuple[int, int], stride: tuple[int, int] = (1, 1),
                           padding: tuple[int, int] = (0, 0), dilation: tuple[int, int] = (1, 1)) -> np.ndarray:
    """Where the kh*kw taps of output location (out_y, out_x) sample the layer's input.

    offset: [2*kh*kw, Ho, Wo] for one image, torchvision layout: for tap k (row-major over the
    kernel, k = i*kw + j) channel 2k is dy and channel 2k+1 is dx. Returns [kh*kw, 2] float (y, x)
    in the layer's input pixel coordinates:
        y = out_y*stride_h - pad_h + i*dil_h + dy,   x = out_x*stride_w - pad_w + j*dil_w + dx.
    """
    off = torch.as_tensor(np.asarray(offset), dtype=torch.float32)
    kh, kw = kernel_size
    if off.dim() != 3 or off.shape[0] != 2 * kh * kw:
        raise ExplainError(f"offset must be [2*{kh}*{kw}, Ho, Wo], got {tuple(off.shape)}")
    ho, wo = off.shape[1:]
    if not (0 <= out_y < ho and 0 <= out_x < wo):
        raise ExplainError(f"output location ({out_y}, {out_x}) outside the {ho}x{wo} output")
    o = off[:, out_y, out_x]
    i = torch.arange(kh).repeat_interleave(kw).float()   # row of tap k
    j = torch.arange(kw).repeat(kh).float()              # column of tap k
    y = out_y * stride[0] - padding[0] + i * dilation[0] + o[0::2]
    x = out_x * stride[1] - padding[1] + j * dilation[1] + o[1::2]
    return torch.stack([y, x], dim=1).numpy()


def offset_magnitude(offset: torch.Tensor | np.ndarray) -> np.ndarray:
    """[2*K, Ho, Wo] -> [Ho, Wo]: mean over the K taps of the offset length sqrt(dy^2 + dx^2), in pixels."""
    off = torch.as_tensor(np.asarray(offset), dtype=torch.float32)
    if off.dim() != 3 or off.shape[0] % 2:
        raise ExplainError(f"offset must be [2*K, Ho, Wo], got {tuple(off.shape)}")
    return torch.sqrt(off[0::2] ** 2 + off[1::2] ** 2).mean(0).numpy()


@dataclass
class DeformRecord:
    layer: str                       # qualified name of the deformable module
    input_hw: tuple[int, int]        # spatial size of the layer's input
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    offset: np.ndarray               # [2*kh*kw, Ho, Wo] (first image)
    mask: np.ndarray | None          # [kh*kw, Ho, Wo] modulation, None when not modulated


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def deformable_layers(model: nn.Module) -> list[str]:
    """Names of the modules that own an ``offset_conv`` (DeformConv2d-style layers)."""
    return [n for n, m in model.named_modules() if hasattr(m, "offset_conv") and hasattr(m, "kernel_size")]


def record_deformable(model: nn.Module, x: torch.Tensor) -> list[DeformRecord]:
    """One forward of x [1, C, H, W]; per deformable layer, its recorded offsets and mask (Taps
    "deform_offset" / "deform_mask" inside the layer) plus the geometry needed to draw them."""
    layers = deformable_layers(model)
    if not layers:
        raise ExplainError("this model has no deformable convolution layer")
    modules = dict(model.named_modules())
    input_hw: dict[str, tuple[int, int]] = {}
    with model_lock(model), hooks_removed_after(model), _eval_mode(model), torch.no_grad():
        for name in layers:
            modules[name].register_forward_pre_hook(
                lambda m, inp, _n=name: input_hw.__setitem__(_n, tuple(inp[0].shape[-2:])))
        with Recorder(model, kinds={"deform_offset", "deform_mask"}) as rec:
            model(x)
    out = []
    for name in layers:
        prefix = name + "."
        offs = [r for r in rec.by_kind("deform_offset") if r.name.startswith(prefix)]
        masks = [r for r in rec.by_kind("deform_mask") if r.name.startswith(prefix)]
        if not offs or name not in input_hw:
            continue
        m = modules[name]
        out.append(DeformRecord(
            layer=name, input_hw=input_hw[name], kernel_size=_pair(m.kernel_size), stride=_pair(m.stride),
            padding=_pair(m.padding), dilation=_pair(m.dilation), offset=offs[0].tensor[0].numpy(),
            mask=masks[0].tensor[0].numpy() if masks else None))
    if not out:
        raise ExplainError("the deformable layers recorded no offsets (they have no 'deform_offset' tap)")
    return out


# ---------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------
def pca_2d(embeddings: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project embeddings [N, D] on their first two principal components.

    Returns (points [N, 2], explained variance ratio [2]). N >= 2 required; D = 1 gives a zero
    second coordinate. Component signs are fixed (largest-|loading| positive) so repeated calls agree.
    """
    e = torch.as_tensor(np.asarray(embeddings), dtype=torch.float64)
    if e.dim() != 2 or e.shape[0] < 2:
        raise ExplainError(f"need embeddings [N >= 2, D], got {tuple(e.shape)}")
    centred = e - e.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    comps = vh[:2]
    signs = torch.sign(comps[torch.arange(comps.shape[0]), comps.abs().argmax(1)])
    comps = comps * signs[:, None]
    pts = centred @ comps.T
    var = s ** 2
    ratio = (var[:2] / var.sum()).numpy() if float(var.sum()) > 0 else np.zeros(2)
    if pts.shape[1] == 1:
        pts = torch.cat([pts, torch.zeros_like(pts)], dim=1)
        ratio = np.concatenate([ratio, [0.0]])
    return pts.numpy(), np.asarray(ratio, dtype=float)
