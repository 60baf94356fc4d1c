"""The plain-text view of a report (the CLI's default output): header, aligned table, totals, cross-checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only: report.py imports this module for ComplexityReport.format_table
    from core.analysis.complexity.report import ComplexityReport, CrossCheck, Disagreement


def _fmt_shape(s: list[int] | None) -> str:
    return "-" if s is None else "[" + ", ".join(map(str, s)) + "]"


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return out


def format_report(report: ComplexityReport, *, max_note: int = 200) -> str:
    """The CLI's plain-text view: header, aligned per-layer table, totals, cross-checks."""
    lines = [
        f"Model: {report.model_name}   input: {'x'.join(map(str, report.input_shape))} (C x H x W, batch 1)"
        f"   output: {_fmt_shape(report.output_shape)}",
        "",
    ]
    headers = ["layer", "type", "output", "params", "MACs", "elementwise", "formula", "counted by", "note"]
    body = []
    for r in report.layers:
        note = r.note if len(r.note) <= max_note else r.note[: max_note - 3] + "..."
        body.append([
            ("! " if r.flagged else "") + r.name, r.type, _fmt_shape(r.output_shape), f"{r.params:,}",
            f"{r.macs:,}", f"{r.elementwise_ops:,}", r.formula, r.counted_by, note,
        ])
    lines.extend(_table(headers, body, right={3, 4, 5}))
    lines += [
        "",
        f"Params: {report.params_total:,} total, {report.params_trainable:,} trainable",
        f"MACs: {report.macs:,} (multiply-accumulates); FLOPs = 2 x MACs = {report.flops:,}",
        f"Element-wise ops (not in MACs): {report.elementwise_ops:,}",
        f"Convention: {report.conventions}",
    ]
    if report.flagged:
        lines.append("FLAGGED layers (part of their work has no counting rule, marked '!'): "
                     + ", ".join(r.name for r in report.flagged))
    for c in report.cross_checks:
        lines.append("")
        lines.extend(_cross_check_lines(c, report.macs))
    return "\n".join(lines)


def _cross_check_lines(c: CrossCheck, ours: int) -> list[str]:
    """A cross-check's total against ours, then its disagreements grouped by reason (long groups summed)."""
    if c.error:
        return [f"Cross-check {c.counter}: FAILED: {c.error}"]
    lines = [f"Cross-check {c.counter}: {c.macs:,} MACs ({c.macs - ours:+,} vs ours). {c.note}"]
    if not c.disagreements:
        return lines
    lines.append(f"  layers where it disagrees ({len(c.disagreements)}), grouped by reason:")
    groups: dict[str, list[Disagreement]] = {}
    for d in c.disagreements:
        groups.setdefault(d.reason, []).append(d)
    for reason, items in groups.items():
        if len(items) <= 3:
            for d in items:
                lines.append(f"    {d.layer} ({d.type}): ours {d.ours:,} vs {d.theirs:,}: {reason}")
            continue
        names = ", ".join(d.layer for d in items[:6]) + (f", ... {len(items) - 6} more" if len(items) > 6 else "")
        ours_sum = sum(d.ours for d in items)
        theirs = sum(d.theirs for d in items)
        lines.append(f"    {len(items)} layers ({names}): ours {ours_sum:,} vs {theirs:,} in all: {reason}")
    return lines
