"""Complexity counter: acceptance figures, hand counts per family, custom-layer rules, cross-checks, CLI.

Expected numbers are either the issue's acceptance figures (seed 003, seed 000, torchvision's table
as measured in FIELD-NOTES) or computed in the test from layer shapes by the textbook formulas,
never read back from the code under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from core.analysis.complexity import (
    ComplexityError,
    ComplexityReport,
    complexity_report,
    model_complexity,
)
from core.analysis.conv_cost import compare_conv_costs, regular_conv_cost, separable_conv_cost
from core.complexity import main

REPO = Path(__file__).resolve().parents[3]


def conv_macs(k: int, m: int, n: int, ho: int, wo: int | None = None) -> int:
    """Textbook Dk x Dk x M x N x Ho x Wo."""
    return k * k * m * n * ho * (ho if wo is None else wo)


def conv_params(k: int, m: int, n: int, bias: bool = True) -> int:
    return k * k * m * n + (n if bias else 0)


def require_model(name: str) -> None:
    """The acceptance figures are about registered models: a missing one is a failure, not a skip."""
    from core.models.registry import get_spec

    get_spec(name)  # raises UnknownModelError naming the known models


def row(report: ComplexityReport, name: str):
    matches = [r for r in report.layers if r.name == name]
    assert matches, f"no row {name!r} in {[r.name for r in report.layers]}"
    return matches[0]


# --------------------------------------------------------------------------- seed 003 AlexNet


class CustomAlexNet(nn.Module):
    """Seed 003's CustomAlexNet, verbatim architecture (the reference independent of the registry)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels=3, out_channels=64, kernel_size=11, padding=2, stride=4)
        self.conv2 = nn.Conv2d(in_channels=64, out_channels=196, kernel_size=5, padding=2)
        self.conv3 = nn.Conv2d(in_channels=196, out_channels=384, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(in_channels=384, out_channels=256, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(in_channels=256, out_channels=256, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(in_features=256 * 6 * 6, out_features=4096)
        self.fc2 = nn.Linear(in_features=4096, out_features=1024)
        self.fc3 = nn.Linear(in_features=1024, out_features=num_classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = F.relu(self.conv5(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = torch.flatten(x, start_dim=1)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, p=0.5)
        x = F.relu(self.fc2(x))
        x = F.dropout(x, p=0.5)
        x = self.fc3(x)
        return x


# Seed 003's hand count: output maps 55, 27, 13, 13, 13; fc1 sees 256 x 6 x 6.
ALEXNET_HAND_MACS = (
    conv_macs(11, 3, 64, 55) + conv_macs(5, 64, 196, 27) + conv_macs(3, 196, 384, 13)
    + conv_macs(3, 384, 256, 13) + conv_macs(3, 256, 256, 13)
    + 9216 * 4096 + 4096 * 1024 + 1024 * 1000
)
ALEXNET_HAND_PARAMS = (
    conv_params(11, 3, 64) + conv_params(5, 64, 196) + conv_params(3, 196, 384)
    + conv_params(3, 384, 256) + conv_params(3, 256, 256)
    + 9216 * 4096 + 4096 + 4096 * 1024 + 1024 + 1024 * 1000 + 1000
)


@pytest.fixture(scope="module")
def alexnet_report() -> ComplexityReport:
    torch.manual_seed(0)
    return complexity_report(CustomAlexNet(1000), (3, 224, 224))


def test_seed003_hand_count_is_the_acceptance_figure():
    # the hand sums above reproduce the seed's screenshot, so the formulas in this file are right
    assert ALEXNET_HAND_MACS == 705_535_424
    assert ALEXNET_HAND_PARAMS == 45_463_084


def test_alexnet_reference_totals_and_rows(alexnet_report):
    r = alexnet_report
    assert r.params_total == 45_463_084
    assert r.params_trainable == 45_463_084
    assert r.macs == 705_535_424
    assert r.flops == 2 * 705_535_424 == 1_411_070_848
    conv1 = row(r, "conv1")
    assert conv1.formula == "11x11x3x64x55x55 = 70,276,800"
    assert conv1.output_shape == [1, 64, 55, 55]
    assert conv1.params == 23_296 and conv1.macs == 70_276_800
    assert row(r, "conv2").params == 313_796
    assert row(r, "fc1").formula == "9216x4096 = 37,748,736"
    assert row(r, "fc1").params == 37_752_832
    assert not r.flagged
    # ReLU, max pooling and dropout live in the top-level forward: element-wise, not MACs
    top = row(r, "(top-level forward)")
    assert top.macs == 0 and top.elementwise_ops > 0
    assert r.elementwise_ops > 0


def test_alexnet_cross_checks(alexnet_report):
    checks = {c.counter.split(" ")[0] + (" aten" if "aten" in c.counter else ""): c for c in alexnet_report.cross_checks}
    fcm = checks["FlopCounterMode"]
    assert fcm.error is None and fcm.macs == 705_535_424 and fcm.disagreements == []
    pt = checks["ptflops"]
    assert pt.error is None
    assert pt.macs == 706_902_228  # FIELD-NOTES: bias, ReLU and pooling added
    conv_rows = {d.layer: d for d in pt.disagreements}
    assert set(conv_rows) == {"conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2", "fc3"}
    assert conv_rows["conv1"].theirs - conv_rows["conv1"].ours == 64 * 55 * 55
    assert "bias" in conv_rows["conv1"].reason
    aten = checks["ptflops aten"]
    assert aten.error is None and "bias" in aten.note


def test_alexnet_seed_registered():
    require_model("alexnet_seed")
    r = model_complexity("alexnet_seed", (3, 224, 224), 1000, cross_check=False)
    assert r.params_total == 45_463_084
    assert r.macs == 705_535_424
    assert r.flops == 1_411_070_848


def test_model_is_left_unchanged():
    model = CustomAlexNet(10)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ComplexityError):
        complexity_report(model, (3, 32, 32))  # too small for the seed's fixed 6x6 classifier
    complexity_report(model.conv1, (3, 64, 64))
    assert model.training and model.conv1.training
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert not hasattr(m, "__flops__") and not hasattr(m, "start_flops_count")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_impossible_input_is_one_clear_error():
    with pytest.raises(ComplexityError, match=r"CustomAlexNet.*3x32x32"):
        complexity_report(CustomAlexNet(10), (3, 32, 32), cross_check=False)
    with pytest.raises(ComplexityError, match="C,H,W"):
        complexity_report(CustomAlexNet(10), (3, 224))


# --------------------------------------------------------------------------- resnets


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, macs, params",
    [
        ("resnet18", 1_814_073_344, 11_689_512),
        ("resnet34", 3_663_761_408, 21_797_672),
        ("resnet50", 4_089_184_256, 25_557_032),
    ],
)
def test_resnets_match_torchvision_table(name, macs, params):
    require_model(name)
    r = model_complexity(name, (3, 224, 224), 1000, cross_check=False)
    assert r.macs == macs
    assert r.params_total == params
    assert not r.flagged


@pytest.mark.slow
def test_torchvision_resnet18_directly():
    """Same figure on torchvision's own model, so the counter is checked even without the registry."""
    r = complexity_report(torchvision.models.resnet18(num_classes=1000), (3, 224, 224), cross_check=False)
    assert r.macs == 1_814_073_344
    assert row(r, "conv1").formula == "7x7x3x64x112x112 = 118,013,952"


def test_resnet34_50_classes_params():
    require_model("resnet34")
    r = model_complexity("resnet34", (3, 32, 32), 50, cross_check=False)
    assert r.params_total == 21_310_322


# --------------------------------------------------------------------------- hand counts per family


def test_cnn2_hand_count():
    """Baselines family: cnn2 = 2 x (Conv3x3-BN-ReLU-MaxPool2) with 32, 64 channels + global pool + FC."""
    require_model("cnn2")
    r = model_complexity("cnn2", (3, 32, 32), 10, cross_check=False)
    macs = conv_macs(3, 3, 32, 32) + conv_macs(3, 32, 64, 16) + 64 * 10
    assert r.macs == macs == 5_603_968
    convs = [x for x in r.layers if x.type == "Conv2d"]
    assert [c.formula for c in convs] == ["3x3x3x32x32x32 = 884,736", "3x3x32x64x16x16 = 4,718,592"]
    # params: convs without bias (BN follows), BN 2 per channel, FC with bias
    assert r.params_total == conv_params(3, 3, 32, False) + 64 + conv_params(3, 32, 64, False) + 128 + 64 * 10 + 10


def test_ciresan_hand_count():
    """Seed nets family: Ciresan net at 1x28x28, seven 5x5 convs (48-128-192x5), three 2x2 pools."""
    require_model("ciresan")
    r = model_complexity("ciresan", (1, 28, 28), 10, cross_check=False)
    macs = (conv_macs(5, 1, 48, 28) + conv_macs(5, 48, 128, 14) + conv_macs(5, 128, 192, 7)
            + 4 * conv_macs(5, 192, 192, 7) + 192 * 3 * 3 * 512 + 512 * 512 + 512 * 10)
    assert r.macs == macs


def test_resnet_family_hand_count_basic_block():
    """ResNet family, one BasicBlock by hand: two 3x3 convs 64->64 on 56x56, no bias."""
    block = torchvision.models.resnet.BasicBlock(64, 64)
    r = complexity_report(block, (64, 56, 56), cross_check=False)
    assert r.macs == 2 * conv_macs(3, 64, 64, 56)
    assert r.params_total == 2 * conv_params(3, 64, 64, False) + 2 * 2 * 64


def test_deform_cnn2_hand_count():
    """Deformable family: each conv is a deformable conv plus its offset conv (2 x 3 x 3 = 18 maps)."""
    require_model("deform_cnn2")
    r = model_complexity("deform_cnn2", (3, 32, 32), 10, {"modulated": False}, cross_check=False)
    macs = (conv_macs(3, 3, 32, 32) + conv_macs(3, 3, 18, 32)
            + conv_macs(3, 32, 64, 16) + conv_macs(3, 32, 18, 16) + 64 * 10)
    assert r.macs == macs
    assert [x.counted_by for x in r.layers if x.type == "DeformConv2d"] == ["rule: deformable conv"] * 2


def test_flop_counter_cross_check_with_modulelist_and_cdist():
    """FlopCounterMode's inclusive counts are turned into per-layer ones through never-called ModuleLists."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList([nn.Conv2d(4, 4, 3, padding=1) for _ in range(2)])

        def forward(self, x):
            for conv in self.convs:
                x = conv(x)
            points = x.flatten(2).transpose(1, 2)           # (1, 64, 4)
            return torch.cdist(points, points).sum()          # 64 x 64 pairs x 4 features

    r = complexity_report(Net(), (4, 8, 8))
    top = row(r, "(top-level forward)")
    assert top.macs == 64 * 64 * 4 and not top.flagged
    fcm = next(c for c in r.cross_checks if c.counter.startswith("FlopCounterMode"))
    assert [d.layer for d in fcm.disagreements] == ["(top-level forward)"]
    assert "no formula for" in fcm.disagreements[0].reason
    assert fcm.macs == r.macs - 64 * 64 * 4


# --------------------------------------------------------------------------- depthwise separable


def test_separable_ratio_in_table_is_exact():
    M, N, k, size = 32, 64, 3, 16
    plain = nn.Conv2d(M, N, k, padding=1, bias=False)
    separable = nn.Sequential(
        nn.Conv2d(M, M, k, padding=1, groups=M, bias=False),
        nn.Conv2d(M, N, 1, bias=False),
    )
    rp = complexity_report(plain, (M, size, size), cross_check=False)
    rs = complexity_report(separable, (M, size, size), cross_check=False)
    assert rp.macs == conv_macs(k, M, N, size)
    assert rs.macs == k * k * M * size * size + M * N * size * size
    assert Fraction(rs.macs, rp.macs) == Fraction(1, N) + Fraction(1, k * k)
    assert row(rs, "0").formula == "3x3x1x32x16x16 = 73,728"  # M/groups = 1
    assert "1/N + 1/Dk^2 = 1/64 + 1/9" in row(rs, "1").note
    assert "73/576" in row(rs, "1").note


def test_dwsep_cnn_against_its_plain_twin():
    require_model("dwsep_cnn")
    sep = model_complexity("dwsep_cnn", (3, 32, 32), 10, {"separable": True}, cross_check=False)
    plain = model_complexity("dwsep_cnn", (3, 32, 32), 10, {"separable": False}, cross_check=False)
    plain_convs = [x for x in plain.layers if x.type == "Conv2d"]
    sep_convs = [x for x in sep.layers if x.type == "Conv2d"]
    assert len(sep_convs) == 2 * len(plain_convs)
    for i, p in enumerate(plain_convs):
        dw, pw = sep_convs[2 * i], sep_convs[2 * i + 1]
        N = pw.output_shape[1]
        assert Fraction(dw.macs + pw.macs, p.macs) == Fraction(1, N) + Fraction(1, 9)
        assert "1/N + 1/Dk^2" in pw.note


def test_conv_cost_calculator():
    cmp = compare_conv_costs(M=32, N=64, Dk=3, Df=16)
    assert cmp.regular.macs == 3 * 3 * 32 * 64 * 16 * 16
    assert cmp.separable.macs == (3 * 3 + 64) * 32 * 16 * 16
    assert cmp.ratio == Fraction(1, 64) + Fraction(1, 9)
    assert cmp.ratio_formula.startswith("1/N + 1/Dk^2 = 1/64 + 1/9 = 73/576")
    assert regular_conv_cost(3, 64, 11, 55).worked == "11x11x3x64x55x55 = 70,276,800"
    assert separable_conv_cost(32, 64, 3, 16).params == 9 * 32 + 32 * 64
    json.dumps(cmp.to_dict())
    with pytest.raises(ValueError, match="N must be a positive integer"):
        compare_conv_costs(M=3, N=0, Dk=3, Df=8)


# --------------------------------------------------------------------------- custom layers


def test_deformable_conv_rule():
    from core.models.layers.deform import DeformConv2d

    M, N, k, size = 8, 16, 3, 12
    layer = DeformConv2d(M, N, kernel_size=k, padding=1, modulated=True)
    r = complexity_report(layer, (M, size, size))
    main_row = row(r, "(top-level forward)")
    assert main_row.counted_by == "rule: deformable conv"
    assert main_row.macs == conv_macs(k, M, N, size)
    sampled = M * k * k * size * size
    # 4 per sampled value (bilinear) + 1 (mask multiply) + mask activation per mask value + bias
    assert main_row.elementwise_ops == 4 * sampled + sampled + k * k * size * size + N * size * size
    assert row(r, "offset_conv").macs == conv_macs(k, M, 2 * k * k, size)
    assert row(r, "mask_conv").macs == conv_macs(k, M, k * k, size)
    assert r.macs == conv_macs(k, M, N, size) + conv_macs(k, M, 3 * k * k, size)
    pt = next(c for c in r.cross_checks if "pytorch" in c.counter)
    reason = next(d.reason for d in pt.disagreements if d.layer == "(top-level forward)")
    assert "DeformConv2d" in reason


def test_torchvision_deform_rule_and_flag_for_uncounted_op():
    class Offsets(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.offset = nn.Conv2d(4, 18, 3, padding=1)
            self.deform = torchvision.ops.DeformConv2d(4, 8, 3, padding=1)

        def forward(self, x):
            return self.deform(x, self.offset(x))

    class RawDeform(nn.Module):
        """Calls the functional op directly: no rule applies, so the row must be FLAGGED."""

        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(8, 4, 3, 3))

        def forward(self, x):
            return torchvision.ops.deform_conv2d(x, torch.zeros(1, 18, 8, 8), self.weight, padding=1)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = Offsets()
            self.b = RawDeform()

        def forward(self, x):
            return self.a(x) + self.b(x)

    r = complexity_report(Net(), (4, 8, 8))
    assert row(r, "a.deform").counted_by == "rule: deformable conv"
    assert row(r, "a.deform").macs == conv_macs(3, 4, 8, 8)
    flagged = row(r, "b")
    assert flagged.flagged and "torchvision::deform_conv2d" in flagged.note
    assert [x.name for x in r.flagged] == ["b"]
    fcm = next(c for c in r.cross_checks if c.counter.startswith("FlopCounterMode"))
    d = next(d for d in fcm.disagreements if d.layer == "a.deform")
    assert d.theirs == 0 and "deform_conv2d" in d.reason
    assert "FLAGGED" in r.format_table()


def test_dynamic_conv_rule():
    from core.models.layers.dynamic_conv import DynamicConv2d

    K, N, k, size = 4, 16, 3, 10
    layer = DynamicConv2d(N, kernel_size=k, padding=1, max_in_channels=3, num_kernels=K)
    for c in (1, 2, 3):
        r = complexity_report(layer, (c, size, size))
        top = row(r, "(top-level forward)")
        assert top.counted_by == "rule: dynamic conv"
        aggregation = K * N * c * k * k + K * N  # kernels + per-kernel bias
        assert top.macs == aggregation + conv_macs(k, c, N, size)
        # the attention MLP is counted in its own rows, by the linear rule
        mlp = [x for x in r.layers if x.type == "Linear"]
        assert mlp and all(x.counted_by == "rule: linear" for x in mlp)
        fcm = next(x for x in r.cross_checks if x.counter.startswith("FlopCounterMode"))
        assert fcm.macs == r.macs  # the batched implementation runs exactly those matmuls


def test_self_attention_matmuls_counted_by_aten_ops():
    from core.models.layers.attention import SelfAttention2d

    C, size = 32, 8
    layer = SelfAttention2d(C, reduction=8)
    r = complexity_report(layer, (C, size, size))
    top = row(r, "(top-level forward)")
    L, d = size * size, C // 8
    # scores Q^T K: L x d x L; output V A^T: C x L x L
    assert top.counted_by == "aten ops"
    assert top.macs == L * d * L + C * L * L
    assert "bmm" in top.formula
    assert top.elementwise_ops > 0  # softmax, residual gate
    convs = sum(x.macs for x in r.layers if x.type == "Conv2d")
    assert convs == L * C * d * 2 + L * C * C
    assert not r.flagged


def test_elementwise_never_in_macs():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Sigmoid())
    r = complexity_report(net, (3, 8, 8), cross_check=False)
    assert r.macs == conv_macs(3, 3, 8, 8)
    assert row(r, "1").elementwise_ops == 2 * 8 * 8 * 8  # batch norm: scale + shift
    assert row(r, "2").elementwise_ops == 8 * 8 * 8
    assert row(r, "3").elementwise_ops == 8 * 4 * 4 * 4  # 2x2 window per output
    assert r.elementwise_ops == 2 * 512 + 512 + 512 + 128


# --------------------------------------------------------------------------- output


def test_to_dict_is_json(alexnet_report):
    d = json.loads(json.dumps(alexnet_report.to_dict()))
    assert d["macs"] == 705_535_424 and d["flops"] == 1_411_070_848
    assert d["params_total"] == 45_463_084
    assert {"name", "type", "output_shape", "params", "macs", "formula", "counted_by", "note"} <= set(d["layers"][1])
    assert "FLOPs = 2 x MACs" in d["conventions"]
    assert len(d["cross_checks"]) == 3


def test_table_text(alexnet_report):
    text = alexnet_report.format_table()
    assert "MACs: 705,535,424 (multiply-accumulates); FLOPs = 2 x MACs = 1,411,070,848" in text
    assert "Params: 45,463,084 total, 45,463,084 trainable" in text
    header = next(line for line in text.splitlines() if line.startswith("layer"))
    conv1 = next(line for line in text.splitlines() if line.startswith("conv1 "))
    # aligned columns: the params column ends at the same offset in header and rows
    assert conv1.index("23,296") + len("23,296") == header.index("params") + len("params")


# --------------------------------------------------------------------------- CLI


def test_cli_alexnet_seed(capsys):
    require_model("alexnet_seed")
    assert main(["alexnet_seed", "--input", "3,224,224", "--classes", "1000", "--no-cross-check"]) == 0
    out = capsys.readouterr().out
    assert "MACs: 705,535,424 (multiply-accumulates); FLOPs = 2 x MACs = 1,411,070,848" in out
    assert "11x11x3x64x55x55 = 70,276,800" in out


def test_cli_json(capsys):
    require_model("cnn2")
    assert main(["cnn2", "--input", "1,28,28", "--classes", "10", "--json", "--no-cross-check"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model"] == "cnn2" and d["input_shape"] == [1, 28, 28] and d["output_shape"] == [1, 10]
    assert d["macs"] == conv_macs(3, 1, 32, 28) + conv_macs(3, 32, 64, 14) + 640


@pytest.mark.parametrize(
    "argv, message",
    [
        (["no_such_model", "--input", "3,32,32", "--classes", "10"], "unknown model 'no_such_model'"),
        (["cnn2", "--input", "3,32,32", "--classes", "0"], "--classes must be a positive integer, got 0"),
        (["cnn2", "--input", "3,8,8", "--classes", "10"], "too small for model 'cnn2'"),
        (["cnn2", "--input", "3,32", "--classes", "10"], "--input must be C,H,W"),
        (["cnn2", "--input", "3,32,32", "--classes", "10", "--model-options", "{bad"],
         "--model-options needs a JSON object"),
        (["cnn2", "--input", "3,32,32", "--classes", "10", "--model-options", "[1]"],
         "--model-options needs a JSON object"),
        (["cnn2", "--input", "3,32,32", "--classes", "10", "--model-options", '{"no_such": 1}'],
         "cannot build model 'cnn2'"),
        (["cnn2", "--input", "9,32,32", "--classes", "10"], "input channels, got 9"),
    ],
)
def test_cli_bad_input(argv, message, capsys):
    if argv[0] != "no_such_model":
        require_model(argv[0])
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors (a malformed --model-options) exit in parse_args
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.slow
def test_cli_subprocess_exit_code():
    """The real process: status 2 and one line on stderr, no traceback."""
    bad = subprocess.run([sys.executable, "-m", "core.complexity", "no_such_model", "--input", "3,32,32",
                          "--classes", "3"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert "unknown model 'no_such_model'" in bad.stderr and "Traceback" not in bad.stderr


def test_batch_norm_costs_the_same_whichever_backend_runs_it():
    """cuDNN's batch norm (what BatchNorm dispatches to on a GPU) is priced like the CPU's native one."""
    from core.analysis.complexity.aten_ops import aten_elementwise

    out = torch.zeros(1, 8, 4, 4)
    native = aten_elementwise("_native_batch_norm_legit_no_training", (out,), (out, out, out))
    assert native == 2 * out.numel()
    assert aten_elementwise("cudnn_batch_norm", (out,), (out, out, out, out)) == native


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_counts_do_not_depend_on_the_device():
    # On a GPU, BatchNorm runs cudnn_batch_norm and the deformable conv torchvision's CUDA kernel.
    for name, options in [("deform_cnn2", {"modulated": True}), ("dyconv_resnet18", {"small_input": True})]:
        torch.manual_seed(0)
        model = model_factory(name, options)
        cpu = complexity_report(model, (3, 32, 32), cross_check=False)
        gpu = complexity_report(model.cuda(), (3, 32, 32), cross_check=False)
        assert (gpu.macs, gpu.elementwise_ops, gpu.params_total) == (cpu.macs, cpu.elementwise_ops, cpu.params_total)
        assert gpu.flagged == cpu.flagged == []


def model_factory(name: str, options: dict) -> nn.Module:
    from core.models import create_model

    return create_model(name, num_classes=10, in_channels=3, **options)
