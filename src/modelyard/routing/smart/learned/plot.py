"""RouteLLM-style plots of an evaluation: PNG, and a self-contained HTML page (inline SVG + table).

Left panel: quality against the share of calls sent to the strong model, with the strong and weak
models as dashed lines, the random diagonal, the oracle, each router's curve and markers where
the learned router reaches 50% and 80% of the possible gain (CPT). Right panel (when prices are
known): the same curves against dollars per 1,000 queries.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.routing.smart.learned.evaluate import LEARNED, EvalReport, RouterResult
from modelyard.routing.smart.learned.metrics import exact_curve

__all__ = ["metrics_rows", "write_plots"]

_STYLE = {
    LEARNED: {"color": "#d62728", "linewidth": 2.4, "zorder": 5},
    "oracle": {"color": "#7f7f7f", "linestyle": ":", "linewidth": 1.4},
    "random": {"color": "#bbbbbb", "linewidth": 1.0},
    "prompt length": {"color": "#1f77b4", "linewidth": 1.2},
    "TF-IDF kNN (k=50)": {"color": "#2ca02c", "linewidth": 1.2},
    "group prior (gold subject)": {"color": "#9467bd", "linewidth": 1.2},
}


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%" if value == value else "n/a"


def metrics_rows(report: EvalReport) -> list[list[str]]:
    """Table rows: router, APGR [95% CI], CPT(20/50/80%) (50/80 with CIs), RouteLLM-way APGR, CPT(50%)."""
    rows = []
    for result in report.results:
        m = result.metrics
        if m is None:
            share = result.fixed_share or 0.0
            quality = report.strong_quality if share >= 1.0 else report.weak_quality
            rows.append([result.name, f"quality {quality:.3f} at {_pct(share)} strong", "", "", "", "", ""])
            continue
        rows.append(
            [
                result.name,
                f"{m.grid.apgr:.3f} [{m.grid_low.apgr:.3f}, {m.grid_high.apgr:.3f}]",
                _pct(m.grid.cpt[0]),
                f"{_pct(m.grid.cpt[1])} [{_pct(m.grid_low.cpt[1])}, {_pct(m.grid_high.cpt[1])}]",
                f"{_pct(m.grid.cpt[2])} [{_pct(m.grid_low.cpt[2])}, {_pct(m.grid_high.cpt[2])}]",
                f"{m.routellm.apgr:.3f} [{m.routellm_low.apgr:.3f}, {m.routellm_high.apgr:.3f}]",
                _pct(m.routellm.cpt[1]),
            ]
        )
    return rows


HEADERS = [
    "router",
    "APGR (1% grid) [95% CI]",
    "CPT(20%)",
    "CPT(50%) [95% CI]",
    "CPT(80%) [95% CI]",
    "APGR (RouteLLM bins) [95% CI]",
    "CPT(50%) RouteLLM",
]


def _curve(report: EvalReport, result: RouterResult) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    assert result.scores is not None
    share, quality = exact_curve(result.scores, report.strong_score, report.weak_score)
    grid = np.linspace(0.0, 1.0, 201)
    return grid, np.interp(grid, share, quality)


def _cost_curve(report: EvalReport, result: RouterResult) -> np.ndarray[Any, Any]:
    """Dollars per 1,000 queries at each point of the 201-point share grid (ties split evenly)."""
    assert result.scores is not None and report.strong_cost is not None and report.weak_cost is not None
    share, extra = exact_curve(result.scores, report.strong_cost, report.weak_cost)
    return 1000.0 * np.interp(np.linspace(0.0, 1.0, 201), share, extra)


def _figure(report: EvalReport) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_cost = report.strong_cost is not None
    fig, axes = plt.subplots(1, 2 if with_cost else 1, figsize=(13 if with_cost else 7.5, 5.2), squeeze=False)
    panels = [(axes[0][0], False)] + ([(axes[0][1], True)] if with_cost else [])
    for ax, cost_axis in panels:
        x_weak = (
            1000.0 * float(report.weak_cost.mean()) if cost_axis and report.weak_cost is not None else 0.0
        )
        x_strong = (
            1000.0 * float(report.strong_cost.mean()) if cost_axis and report.strong_cost is not None else 1.0
        )
        ax.axhline(
            report.strong_quality,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"strong: {report.strong}",
        )
        ax.axhline(
            report.weak_quality, color="black", linestyle="-.", linewidth=1, label=f"weak: {report.weak}"
        )
        for result in report.results:
            if result.scores is None:
                continue
            style = dict(_STYLE.get(result.name, {"linewidth": 1.0}))
            grid, quality = _curve(report, result)
            x = _cost_curve(report, result) if cost_axis else grid * 100
            label = result.name
            if result.metrics is not None and result.name != "random":
                label += f" (APGR {result.metrics.grid.apgr:.3f})"
            if result.name == "random":
                # the random router's expected curve is the straight line between the two models
                x = np.array([x_weak, x_strong]) if cost_axis else np.array([0.0, 100.0])
                quality = np.array([report.weak_quality, report.strong_quality])
                label = "random (diagonal)"
            ax.plot(x, quality, label=label, **style)
            if result.name == LEARNED and result.metrics is not None:
                for level, cpt in zip((0.5, 0.8), result.metrics.grid.cpt[1:], strict=True):
                    target = report.weak_quality + level * (report.strong_quality - report.weak_quality)
                    at = np.interp(cpt, grid, _cost_curve(report, result)) if cost_axis else 100 * cpt
                    ax.plot([at], [target], marker="o", color="#d62728", markersize=7, zorder=6)
                    ax.annotate(
                        f"CPT({int(level * 100)}%) = {100 * cpt:.0f}%",
                        (at, target),
                        textcoords="offset points",
                        xytext=(8, -14),
                        fontsize=8,
                        color="#d62728",
                    )
        ax.set_xlabel("$ per 1,000 queries" if cost_axis else "% of calls to the strong model")
        ax.set_ylabel("quality (mean score)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7.5, loc="lower right")
    title = f"{report.title}\n{report.mode}; {report.prompts} prompts"
    fig.suptitle(title, fontsize=9.5)
    if with_cost:
        fig.text(0.5, 0.005, report.cost_note.replace("$", r"\$"), ha="center", fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def write_plots(report: EvalReport, png: Path, html_path: Path) -> None:
    """Write the PNG and a self-contained HTML page (inline SVG, metrics table, notes)."""
    import matplotlib.pyplot as plt

    fig = _figure(report)
    try:
        fig.savefig(png, dpi=110)
        svg = io.StringIO()
        fig.savefig(svg, format="svg")
    finally:
        plt.close(fig)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in metrics_rows(report)
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in [*report.notes, report.cost_note] if n)
    svg_text = svg.getvalue()
    svg_text = svg_text[svg_text.find("<svg") :]
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(report.title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}th{{background:#f4f4f4}}
svg{{max-width:100%;height:auto}}</style>
</head><body>
<h1>{html.escape(report.title)}</h1>
<p>{html.escape(report.mode)}; {report.prompts} prompts
({report.dropped_contaminated} contaminated dropped). Strong quality {report.strong_quality:.4f},
weak {report.weak_quality:.4f}. 95% CIs: bootstrap over prompts.</p>
{svg_text}
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<ul>{notes}</ul>
</body></html>
"""
    html_path.write_text(page, encoding="utf-8")
