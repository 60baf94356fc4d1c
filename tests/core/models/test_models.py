"""Every registered model: forward, backward, every parameter gets a gradient, no NaN; plus the
family-specific promises (seed parameter counts, pretrained loading, linear probe, variable input,
depthwise-separable cost ratio, CIFAR ResNet depth, Ciresan FC options, graph branch)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from core.analysis.recorder import Recorder
from core.models import create_model, get_spec, list_models
from core.models.layers.dynamic_conv import DynamicConv2d

ALL_MODELS = [s.name for s in list_models()]

REQUIRED = {
    "cnn2", "cnn3", "cnn4", "deform_cnn2", "resnet18", "resnet34", "resnet50", "cifar_resnet",
    "alexnet_seed", "ciresan", "ciresan_residual", "dwsep_cnn", "dyconv_resnet18", "pca_cnn",
    "attn_deform_cnn4", "spatial_attn_cnn4", "parallel_cnn",
}

# Forward+backward at 64 px (batch 2) or 224 px (batch 1) costs seconds for these on 2 CPU cores;
# they still run there, in the slow suite.
HEAVY = {"resnet34", "resnet50", "ciresan", "ciresan_residual", "cifar_resnet", "alexnet_seed"}

NUM_CLASSES = 7  # deliberately not 10 or 1000


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These are tiny tensors: intra-op threads only add barriers, and on a shared 2-core machine
    OpenMP's spinning barriers made ResNet steps 5-10x slower than one thread (measured). The
    previous setting is restored for the rest of the session."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cases() -> list[tuple[str, int]]:
    cases = []
    for spec in list_models():
        for c in (1, 3):
            if c in spec.in_channels:
                cases.append((spec.name, c))
    return cases


def _break_init_symmetries(model: nn.Module) -> None:
    """Make every parameter's gradient generically non-zero at step 0.

    Two initialisations zero a gradient exactly, by design rather than by a broken graph:
    SAGAN-style gates start at gamma = 0 (nothing behind the gate gets a gradient), and a
    normalisation with bias 0 followed by ReLU, a 1-channel conv and another BatchNorm is
    scale-invariant (dwsep_cnn on a 1-channel input). Opening the gates and giving norms small
    random biases lets the test demand a non-zero gradient everywhere.
    """
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))


def _train_step_checks(model: nn.Module, x: torch.Tensor, num_classes: int = NUM_CLASSES) -> None:
    """One forward/backward; asserts output shape, finiteness, and a finite non-zero gradient on
    every trainable parameter (and none on frozen ones)."""
    model.zero_grad(set_to_none=True)
    out = model(x)
    assert out.shape == (x.shape[0], num_classes), f"input {tuple(x.shape)} gave {tuple(out.shape)}"
    assert torch.isfinite(out).all(), f"non-finite logits for input {tuple(x.shape)}"
    target = torch.arange(x.shape[0]) % num_classes
    F.cross_entropy(out, target).backward()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, f"frozen {name} got a gradient"
            continue
        assert p.grad is not None, f"{name} got no gradient at input {tuple(x.shape)}"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient at input {tuple(x.shape)}"


def _sizes_fast(name: str, channels: int) -> list[int]:
    if name in HEAVY:  # one size per channel count here; the full sweep is in the slow test
        return [28] if channels == 1 else [32]
    return [28, 32, 64] if channels == 3 else [28, 32]


def test_every_required_model_is_registered():
    missing = REQUIRED - set(ALL_MODELS)
    assert not missing, f"not registered: {sorted(missing)}"


@pytest.mark.parametrize("name,channels", _cases())
def test_forward_backward_small_inputs(name: str, channels: int):
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, in_channels=channels)
    model.train()
    _break_init_symmetries(model)
    for size in _sizes_fast(name, channels):
        if size >= get_spec(name).min_input_size:
            _train_step_checks(model, torch.randn(2, channels, size, size))
    # Triplet loss reads ``embed``: [B, embedding_dim], finite.
    with torch.no_grad():
        emb = model.eval().embed(torch.randn(2, channels, 32, 32))
    assert emb.shape == (2, model.embedding_dim)
    assert torch.isfinite(emb).all()


@pytest.mark.parametrize("name", [n for n in ALL_MODELS if n not in HEAVY])
def test_forward_backward_224px(name: str):
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, in_channels=3)
    _break_init_symmetries(model)
    _train_step_checks(model, torch.randn(1, 3, 224, 224))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HEAVY & set(ALL_MODELS)))
def test_forward_backward_heavy_full_sweep(name: str):
    torch.manual_seed(0)
    spec = get_spec(name)
    for channels in (1, 3):
        if channels not in spec.in_channels:
            continue
        model = create_model(name, num_classes=NUM_CLASSES, in_channels=channels)
        _break_init_symmetries(model)
        for size in (28, 32, 64):
            _train_step_checks(model, torch.randn(2, channels, size, size))
        _train_step_checks(model, torch.randn(1, channels, 224, 224))


@pytest.mark.parametrize(
    "name,options",
    [
        ("deform_cnn2", {"modulated": True}),
        ("cifar_resnet", {"version": 2, "n": 2}),
        ("dyconv_resnet18", {"small_input": True, "num_kernels": 2}),
        ("resnet18", {"small_input": True}),
        ("dwsep_cnn", {"base": "cnn4", "kernel_size": 5}),
        ("cnn3", {"widths": (8, 16, 24), "dropout": 0.3}),
        ("attn_deform_cnn4", {"modulated": False}),
        ("pca_cnn", {"attention_channels": 1}),
    ],
)
def test_non_default_options_train(name: str, options: dict):
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, in_channels=3, **options)
    _break_init_symmetries(model)
    _train_step_checks(model, torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("spec", [s for s in list_models() if s.min_input_size < 28], ids=lambda s: s.name)
def test_models_run_at_their_declared_min_input_size(spec):
    model = create_model(spec.name, num_classes=NUM_CLASSES, in_channels=3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, spec.min_input_size, spec.min_input_size))
    assert out.shape == (1, NUM_CLASSES)


@pytest.mark.parametrize("name", ["cnn2", "cnn3", "cnn4", "resnet18", "cifar_resnet"])
def test_embed_then_fc_is_forward(name: str):
    model = create_model(name, num_classes=NUM_CLASSES, in_channels=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.fc(model.embed(x)), model(x))


# --------------------------------------------------------------------------- variable input


@pytest.mark.parametrize("name", [s.name for s in list_models() if s.variable_input])
def test_variable_input_one_instance_takes_1_2_3_channels(name: str):
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, in_channels=3)
    for c in (1, 2, 3):
        _train_step_checks(model, torch.randn(2, c, 32, 32))


def test_variable_input_flags():
    assert {s.name for s in list_models() if s.variable_input} >= {"dyconv_resnet18", "pca_cnn"}


def test_dyconv_resnet18_kernel_attention_is_observable():
    model = create_model("dyconv_resnet18", num_classes=NUM_CLASSES, in_channels=3, num_kernels=4).eval()
    assert isinstance(model.conv1, DynamicConv2d)
    with Recorder(model, kinds={"kernel_attention"}) as rec, torch.no_grad():
        model(torch.randn(3, 2, 32, 32))
    assert len(rec.records) == 1
    attn = rec.records[0].tensor
    assert attn.shape == (3, 4)
    torch.testing.assert_close(attn.sum(dim=1), torch.ones(3))


# --------------------------------------------------------------------------- bad input


def test_fixed_input_model_rejects_other_channel_count_clearly():
    model = create_model("cnn3", num_classes=3, in_channels=3)
    with pytest.raises(RuntimeError, match="channels"):
        model(torch.randn(1, 2, 32, 32))


@pytest.mark.parametrize(
    "name,options,match",
    [
        ("ciresan", {"fc_layers": 6}, "fc_layers"),
        ("ciresan_residual", {"fc_layers": 0}, "fc_layers"),
        ("cifar_resnet", {"version": 3}, "version"),
        ("cifar_resnet", {"n": 0}, "n"),
        ("dwsep_cnn", {"base": "cnn9"}, "base"),
        ("cnn3", {"widths": (8, 16)}, "widths"),
        ("parallel_cnn", {"graph": "full"}, "graph"),
        ("cnn2", {"kernel_size": 4}, "kernel_size"),
    ],
)
def test_bad_options_raise_value_error_naming_the_option(name, options, match):
    with pytest.raises(ValueError, match=match):
        create_model(name, num_classes=3, in_channels=3, **options)


# --------------------------------------------------------------------------- seed figures


def _n_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def test_resnet34_50_classes_has_seed_000_parameter_count():
    assert _n_params(create_model("resnet34", num_classes=50, in_channels=3)) == 21_310_322


def test_alexnet_seed_parameter_count_is_seed_003_hand_count():
    # conv: in*k*k*out + out; fc: in*out + out (seed 003's table)
    hand = (3 * 11 * 11 * 64 + 64) + (64 * 5 * 5 * 196 + 196) + (196 * 9 * 384 + 384) \
        + (384 * 9 * 256 + 256) + (256 * 9 * 256 + 256) \
        + (256 * 6 * 6 * 4096 + 4096) + (4096 * 1024 + 1024) + (1024 * 1000 + 1000)
    assert hand == 45_463_084
    assert _n_params(create_model("alexnet_seed", num_classes=1000, in_channels=3)) == hand


def test_alexnet_seed_at_224_is_exactly_the_seed_forward():
    """At 224 px the adaptive pool must be an identity: compare with the seed's forward verbatim."""
    torch.manual_seed(0)
    m = create_model("alexnet_seed", num_classes=10, in_channels=3).eval()
    x = torch.randn(1, 3, 224, 224)

    def seed_forward(x):
        x = F.relu(m.conv1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = F.relu(m.conv2(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = F.relu(m.conv3(x))
        x = F.relu(m.conv4(x))
        x = F.relu(m.conv5(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        assert x.shape[-2:] == (6, 6)
        x = torch.flatten(x, start_dim=1)
        x = F.relu(m.fc1(x))
        x = F.relu(m.fc2(x))
        return m.fc3(x)

    with torch.no_grad():
        torch.testing.assert_close(m(x), seed_forward(x))


def test_ciresan_parameter_count_matches_seed_layers_at_28px():
    def conv(i, o, k=5):
        return i * k * k * o + o

    convs = conv(1, 48) + conv(48, 128) + conv(128, 192) + 4 * conv(192, 192)
    fcs = (1728 * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10)
    assert _n_params(create_model("ciresan", num_classes=10, in_channels=1)) == convs + fcs
    res_fcs = (9408 * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10)
    res = convs + (128 * 192 + 192) + res_fcs
    assert _n_params(create_model("ciresan_residual", num_classes=10, in_channels=1)) == res


@pytest.mark.parametrize("name", ["ciresan", "ciresan_residual"])
@pytest.mark.parametrize("fc_layers", [1, 2, 3, 4, 5])
def test_ciresan_fc_layers_option(name, fc_layers):
    model = create_model(name, num_classes=4, in_channels=1, fc_layers=fc_layers)
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert len(linears) == fc_layers
    assert linears[-1].out_features == 4
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 28, 28)).shape == (1, 4)


# --------------------------------------------------------------------------- resnets


def test_small_input_stem_keeps_a_4x4_last_stage_at_32px():
    model = create_model("resnet18", num_classes=10, in_channels=3, small_input=True)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    seen = {}
    model.layer4.register_forward_hook(lambda m, i, o: seen.update(shape=o.shape))
    model.eval()(torch.randn(1, 3, 32, 32))
    assert seen["shape"][-2:] == (4, 4)


@pytest.mark.parametrize("channels", [1, 2])
def test_resnet_other_channel_count_replaces_conv1(channels):
    model = create_model("resnet50", num_classes=3, in_channels=channels)
    assert model.conv1.in_channels == channels
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)


def test_freeze_backbone_leaves_only_fc_trainable_and_backbone_in_eval():
    model = create_model("resnet18", num_classes=5, in_channels=3, freeze_backbone=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    assert _n_params(model, trainable_only=True) == 512 * 5 + 5
    model.train()
    assert model.fc.training and not model.bn1.training and not model.layer1[0].bn1.training
    running = model.bn1.running_mean.clone()
    _train_step_checks(model, torch.randn(2, 3, 32, 32), num_classes=5)
    torch.testing.assert_close(model.bn1.running_mean, running)  # frozen statistics did not drift


def test_pretrained_path_safetensors_roundtrip(tmp_path):
    torch.manual_seed(0)
    source = create_model("resnet18", num_classes=10, in_channels=3, small_input=True)
    with torch.no_grad():  # non-default statistics so a silent skip would show
        source.bn1.running_mean.uniform_(-1, 1)
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))

    same = create_model("resnet18", num_classes=10, in_channels=3, small_input=True, pretrained_path=str(path))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(same.eval()(x), source.eval()(x))

    # Another class count: backbone loaded, head fresh (the linear-probe case).
    probe = create_model("resnet18", num_classes=3, in_channels=3, small_input=True,
                         pretrained_path=str(path), freeze_backbone=True)
    torch.testing.assert_close(probe.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    assert probe.fc.out_features == 3
    with torch.no_grad():
        torch.testing.assert_close(probe.eval().embed(x), source.embed(x))

    # A backbone-only file (no fc.*) also loads; the head stays fresh.
    headless = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items() if not k.startswith("fc.")}, str(headless))
    backbone = create_model("resnet18", num_classes=10, in_channels=3, small_input=True, pretrained_path=str(headless))
    torch.testing.assert_close(backbone.bn1.running_mean, source.bn1.running_mean)

    # One channel: conv1 adapted by summing the RGB filters (a grey image responds as before).
    grey = create_model("resnet18", num_classes=10, in_channels=1, small_input=True, pretrained_path=str(path))
    torch.testing.assert_close(grey.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True))
    g = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grey.eval()(g), source(g.expand(1, 3, 32, 32)), rtol=1e-4, atol=1e-4)


def test_pretrained_path_pth_is_read_with_weights_only(tmp_path):
    source = create_model("resnet18", num_classes=4, in_channels=3)
    good = tmp_path / "w.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, good)
    loaded = create_model("resnet18", num_classes=4, in_channels=3, pretrained_path=str(good))
    torch.testing.assert_close(loaded.fc.weight, source.fc.weight)

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": source.state_dict(), "extra": nn.ReLU()}, evil)  # a pickled module
    with pytest.raises(ValueError, match="weights_only"):
        create_model("resnet18", num_classes=4, in_channels=3, pretrained_path=str(evil))


def test_pretrained_path_mismatch_is_a_clear_error(tmp_path):
    path = tmp_path / "r18.safetensors"
    save_file(create_model("resnet18", num_classes=10, in_channels=3).state_dict(), str(path))
    with pytest.raises(ValueError, match=r"r18\.safetensors.*missing: layer1\.2"):
        create_model("resnet34", num_classes=10, in_channels=3, pretrained_path=str(path))
    with pytest.raises(ValueError, match="shape mismatch: conv1.weight"):
        create_model("resnet18", num_classes=10, in_channels=3, small_input=True, pretrained_path=str(path))
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        create_model("resnet18", num_classes=10, in_channels=3, pretrained_path=str(tmp_path / "nowhere.safetensors"))
    bad = tmp_path / "w.onnx"
    bad.write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported"):
        create_model("resnet18", num_classes=10, in_channels=3, pretrained_path=str(bad))


# --------------------------------------------------------------------------- cifar resnet (seed 004)


def _weight_layers(model: nn.Module) -> int:
    """Convolutions and Linear layers on the main path (projection shortcuts excluded), He et al.'s count."""
    return sum(
        1 for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and "projection" not in name
    )


@pytest.mark.parametrize("n", [1, 3])
def test_cifar_resnet_depth(n):
    v1 = create_model("cifar_resnet", num_classes=10, in_channels=3, n=n, version=1)
    v2 = create_model("cifar_resnet", num_classes=10, in_channels=3, n=n, version=2)
    assert _weight_layers(v1) == 6 * n + 2
    assert _weight_layers(v2) == 9 * n + 2
    assert v1.stem.out_channels == 16 and v2.stem.out_channels == 16
    assert v1.embedding_dim == 64 and v2.embedding_dim == 256


def test_cifar_resnet20_parameter_count():
    # He et al. 2016, Table 6: ResNet-20 has 0.27 M parameters.
    assert round(_n_params(create_model("cifar_resnet", num_classes=10, in_channels=3, n=3)) / 1e6, 2) == 0.27


# --------------------------------------------------------------------------- depthwise-separable


def _conv_macs(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Per-conv MACs by the textbook rule Dk*Dk*(M/groups)*N*Df*Df, via forward hooks."""
    macs: dict[str, int] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            def hook(mod, inp, out, _name=name):
                kh, kw = mod.kernel_size
                macs[_name] = kh * kw * (mod.in_channels // mod.groups) * out[0].numel()
            handles.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return macs


@pytest.mark.parametrize("base", ["cnn2", "cnn3", "cnn4"])
def test_dwsep_cnn_cost_ratio_is_one_over_n_plus_one_over_dk2(base):
    plain = create_model("dwsep_cnn", num_classes=10, in_channels=3, base=base, separable=False)
    twin = create_model(base, num_classes=10, in_channels=3)
    assert list(plain.state_dict()) == list(twin.state_dict())  # the plain twin IS the baseline
    sep = create_model("dwsep_cnn", num_classes=10, in_channels=3, base=base)
    x = torch.randn(1, 3, 32, 32)
    plain_macs, sep_macs = _conv_macs(plain, x), _conv_macs(sep, x)
    for i, block in enumerate(sep.features):
        depthwise, pointwise = block.conv[0], block.conv[3]
        assert depthwise.groups == depthwise.in_channels == depthwise.out_channels
        assert pointwise.kernel_size == (1, 1)
        n_out, dk = pointwise.out_channels, depthwise.kernel_size[0]
        ratio = (sep_macs[f"features.{i}.conv.0"] + sep_macs[f"features.{i}.conv.3"]) / plain_macs[f"features.{i}.conv"]
        assert ratio == pytest.approx(1 / n_out + 1 / dk ** 2, rel=1e-12)


# --------------------------------------------------------------------------- seed nets details


@pytest.mark.parametrize("graph", ["grid", "knn"])
def test_parallel_cnn_graph_options(graph):
    model = create_model("parallel_cnn", num_classes=NUM_CLASSES, in_channels=3, graph=graph)
    _break_init_symmetries(model)
    _train_step_checks(model, torch.randn(2, 3, 32, 32))


def test_graph_adjacencies():
    from core.models.seed_nets import grid_adjacency, knn_adjacency

    grid = grid_adjacency(3, 4)
    assert torch.equal(grid, grid.T)
    assert grid.sum(dim=1).tolist() == [2, 3, 3, 2, 3, 4, 4, 3, 2, 3, 3, 2]  # corners 2, edges 3, inside 4
    nodes = torch.randn(2, 10, 5)
    knn = knn_adjacency(nodes, k=3)
    assert torch.equal(knn, knn.transpose(1, 2))
    assert (knn.sum(dim=-1) >= 3).all() and knn.diagonal(dim1=1, dim2=2).sum() == 0


def test_attn_deform_cnn4_layer_list_and_taps():
    model = create_model("attn_deform_cnn4", num_classes=50, in_channels=3).eval()
    assert isinstance(model.bn1, nn.GroupNorm) and model.bn1.num_groups == 1
    assert model.layer4.mask_conv is not None  # modulated (v2)
    with Recorder(model) as rec, torch.no_grad():
        model(torch.randn(1, 3, 124, 124))
    kinds = {r.kind for r in rec.records}
    assert {"deform_offset", "deform_mask", "spatial_attention", "channel_attention"} <= kinds
    offset = next(r.tensor for r in rec.records if r.kind == "deform_offset")
    assert offset.shape == (1, 18, 31, 31)  # the seed's 31x31 map after conv1 (stride 2) and pool


def test_alexnet_seed_runs_down_to_28px_with_pools_skipped():
    model = create_model("alexnet_seed", num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        for size in (28, 40, 63, 100):
            assert model(torch.randn(1, 1, size, size)).shape == (1, 10)
