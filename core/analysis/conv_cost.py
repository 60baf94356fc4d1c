"""Cost of one regular convolution versus its depthwise-separable counterpart (seed 003, question 1).

Pure arithmetic, no torch: the dashboard's calculator and the tests call it with the symbols of
the seed (M input channels, N output channels, Dk kernel size, Df output feature-map size):

    regular:               Dk x Dk x M x N x Df x Df                 multiply-accumulates
    depthwise separable:   Dk x Dk x M x Df x Df  +  M x N x Df x Df = (Dk x Dk + N) x M x Df x Df
    ratio:                 (Dk^2 + N) / (Dk^2 x N) = 1/N + 1/Dk^2   (exact, as a Fraction)

Parameters (no bias): regular Dk x Dk x M x N; separable Dk x Dk x M + M x N, same ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class ConvCost:
    """MACs and weights of one convolution layout, with the formula written out."""

    layout: str          # "regular" or "depthwise separable"
    macs: int            # multiply-accumulates for one image
    params: int          # weights, bias excluded
    formula: str         # symbolic formula, e.g. "Dk x Dk x M x N x Df x Df"
    worked: str          # the same formula with the numbers and the result
    params_formula: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ConvCostComparison:
    regular: ConvCost
    separable: ConvCost
    ratio: Fraction      # separable MACs / regular MACs, exactly 1/N + 1/Dk^2
    ratio_formula: str   # "1/N + 1/Dk^2 = 1/64 + 1/9 = 73/576 ~ 0.1267"

    @property
    def speedup(self) -> float:
        """How many times fewer MACs the separable layout needs."""
        return float(1 / self.ratio)

    def to_dict(self) -> dict:
        return {
            "regular": self.regular.to_dict(),
            "separable": self.separable.to_dict(),
            "ratio": float(self.ratio),
            "ratio_fraction": f"{self.ratio.numerator}/{self.ratio.denominator}",
            "ratio_formula": self.ratio_formula,
            "speedup": self.speedup,
        }


def _check(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def regular_conv_cost(M: int, N: int, Dk: int, Df: int) -> ConvCost:
    """A Dk x Dk convolution from M to N channels producing a Df x Df map."""
    _check(M=M, N=N, Dk=Dk, Df=Df)
    macs = Dk * Dk * M * N * Df * Df
    return ConvCost(
        layout="regular",
        macs=macs,
        params=Dk * Dk * M * N,
        formula="Dk x Dk x M x N x Df x Df",
        worked=f"{Dk}x{Dk}x{M}x{N}x{Df}x{Df} = {macs:,}",
        params_formula=f"Dk x Dk x M x N = {Dk}x{Dk}x{M}x{N} = {Dk * Dk * M * N:,}",
    )


def separable_conv_cost(M: int, N: int, Dk: int, Df: int) -> ConvCost:
    """Depthwise Dk x Dk (groups=M) then pointwise 1x1 from M to N channels, Df x Df output."""
    _check(M=M, N=N, Dk=Dk, Df=Df)
    depthwise = Dk * Dk * M * Df * Df
    pointwise = M * N * Df * Df
    macs = depthwise + pointwise
    assert macs == (Dk * Dk + N) * M * Df * Df
    return ConvCost(
        layout="depthwise separable",
        macs=macs,
        params=Dk * Dk * M + M * N,
        formula="Dk x Dk x M x Df x Df + M x N x Df x Df = (Dk x Dk + N) x M x Df x Df",
        worked=(
            f"{Dk}x{Dk}x{M}x{Df}x{Df} + {M}x{N}x{Df}x{Df} = {depthwise:,} + {pointwise:,} = {macs:,}"
        ),
        params_formula=(
            f"Dk x Dk x M + M x N = {Dk}x{Dk}x{M} + {M}x{N} = {Dk * Dk * M + M * N:,}"
        ),
    )


def compare_conv_costs(M: int, N: int, Dk: int, Df: int) -> ConvCostComparison:
    """Both layouts and their exact MAC ratio ``1/N + 1/Dk^2`` (independent of M and Df)."""
    regular = regular_conv_cost(M, N, Dk, Df)
    separable = separable_conv_cost(M, N, Dk, Df)
    ratio = Fraction(separable.macs, regular.macs)
    assert ratio == Fraction(1, N) + Fraction(1, Dk * Dk)
    return ConvCostComparison(
        regular=regular,
        separable=separable,
        ratio=ratio,
        ratio_formula=(
            f"1/N + 1/Dk^2 = 1/{N} + 1/{Dk * Dk} = {ratio.numerator}/{ratio.denominator}"
            f" ~ {float(ratio):.4f}"
        ),
    )
