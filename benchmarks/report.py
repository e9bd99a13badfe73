"""Summaries, the Markdown table and the figures of ``benchmarks/reproduce.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from benchmarks.stats import mean_std, welch_t_test

__all__ = ["markdown_report", "plot_bars", "plot_curves", "summarize"]

BASELINE = "mixup"
NO_MIXUP = "no-mixup"


def _p(a: Sequence[float], b: Sequence[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    return welch_t_test(a, b).p_value


def summarize(records: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    """One row per (dataset, strategy): mean ± std of test accuracy and Welch p-values.

    Args:
        records: The run records (``dataset``, ``strategy``, ``test_accuracy``, ``period_end_epoch``).
        labels: Display name of each strategy key, in display order.

    Returns:
        Rows with ``dataset``, ``strategy``, ``label``, ``runs``, ``mean``, ``std``,
        ``delta_vs_baseline``, ``p_vs_baseline``, ``p_vs_no_mixup``, ``period_end_epoch``
        (mean over runs, ``None`` without a period).
    """
    rows: list[dict[str, Any]] = []
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    for ds in datasets:
        acc: dict[str, list[float]] = {}
        period: dict[str, list[int]] = {}
        for r in records:
            if r["dataset"] == ds:
                acc.setdefault(r["strategy"], []).append(float(r["test_accuracy"]))
                if r["period_end_epoch"] is not None:
                    period.setdefault(r["strategy"], []).append(int(r["period_end_epoch"]))
        base = acc.get(BASELINE, [])
        none = acc.get(NO_MIXUP, [])
        for key in [k for k in labels if k in acc]:
            values = acc[key]
            mean, std = mean_std(values)
            rows.append({
                "dataset": ds,
                "strategy": key,
                "label": labels[key],
                "runs": len(values),
                "mean": mean,
                "std": std,
                "delta_vs_baseline": mean - mean_std(base)[0] if base and key != BASELINE else None,
                "p_vs_baseline": _p(values, base) if key != BASELINE else None,
                "p_vs_no_mixup": _p(values, none) if key != NO_MIXUP else None,
                "period_end_epoch": (sum(period[key]) / len(period[key])) if key in period else None,
            })
    return rows


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "—"
    return f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}"


def markdown_report(summary: list[dict[str, Any]], *, title: str, notes: Sequence[str] = ()) -> str:
    """The summary as Markdown: a title, free-form notes, then one table per dataset."""
    lines = [f"# {title}", ""]
    lines += [f"- {n}" for n in notes]
    if notes:
        lines.append("")
    for ds in dict.fromkeys(r["dataset"] for r in summary):
        lines += [
            f"## {ds}",
            "",
            "| strategy | runs | test accuracy (mean ± std) | Δ vs Mixup | p vs Mixup (Welch) | p vs no Mixup | period (epochs) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in summary:
            if r["dataset"] != ds:
                continue
            delta = "—" if r["delta_vs_baseline"] is None else f"{100 * r['delta_vs_baseline']:+.2f} pt"
            period = "—" if r["period_end_epoch"] is None else f"{r['period_end_epoch']:.1f}"
            lines.append(
                f"| {r['label']} | {r['runs']} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} % | {delta} | "
                f"{_fmt_p(r['p_vs_baseline'])} | {_fmt_p(r['p_vs_no_mixup'])} | {period} |"
            )
        lines.append("")
    return "\n".join(lines)


def _figure(rows: int, cols: int, *, width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _mean_curve(curves: list[list[float]]) -> tuple[list[float], list[float]]:
    length = min(len(c) for c in curves)
    means, stds = [], []
    for i in range(length):
        m, s = mean_std([c[i] for c in curves])
        means.append(m)
        stds.append(s)
    return means, stds


def plot_curves(records: list[dict[str, Any]], labels: dict[str, str], path: str | Path) -> None:
    """Per-epoch accuracy curves (mean ± std over seeds), the enlightenment period shaded.

    One row per dataset, one panel per strategy; each panel repeats the baseline's
    test curve (dashed) for comparison.
    """
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    strategies = [k for k in labels if any(r["strategy"] == k for r in records)]
    fig, axes = _figure(len(datasets), len(strategies), width=3.0, height=2.6)
    for i, ds in enumerate(datasets):
        base = [r["curves"]["eval_accuracy"] for r in records if r["dataset"] == ds and r["strategy"] == BASELINE]
        for j, key in enumerate(strategies):
            ax = axes[i][j]
            runs = [r for r in records if r["dataset"] == ds and r["strategy"] == key]
            if not runs:
                ax.set_visible(False)
                continue
            ends = [r["period_end_epoch"] for r in runs if r["period_end_epoch"]]
            if ends:
                ax.axvspan(0.5, max(ends) + 0.5, color="tab:orange", alpha=0.12, lw=0)
                ax.axvspan(0.5, min(ends) + 0.5, color="tab:orange", alpha=0.18, lw=0, label="period")
            for name, color, style in (("eval_accuracy", "tab:blue", "-"), ("train_accuracy", "tab:green", "-")):
                mean, std = _mean_curve([r["curves"][name] for r in runs])
                xs = list(range(1, len(mean) + 1))
                ax.plot(xs, mean, style, color=color, lw=1.4, label="test" if name == "eval_accuracy" else "train")
                ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                color=color, alpha=0.2, lw=0)
            if base and key != BASELINE:
                mean, _ = _mean_curve(base)
                ax.plot(range(1, len(mean) + 1), mean, "--", color="0.4", lw=1.0, label="Mixup (test)")
            final = [r["curves"]["eval_accuracy"][-1] for r in runs]
            lo = min(min(r["curves"]["eval_accuracy"][len(r["curves"]["eval_accuracy"]) // 3:]) for r in runs)
            ax.set_ylim(max(0.0, min(lo, min(final)) - 0.05), 1.0)
            ax.set_title(f"{ds}: {labels[key]}", fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("accuracy", fontsize=8)
                ax.legend(fontsize=6, loc="lower right")
    fig.savefig(path, dpi=110)


def plot_bars(summary: list[dict[str, Any]], path: str | Path) -> None:
    """Mean test accuracy per strategy with ±std error bars, one panel per dataset, p vs Mixup on top."""
    datasets = list(dict.fromkeys(r["dataset"] for r in summary))
    fig, axes = _figure(1, len(datasets), width=max(3.5, 0.9 * max(
        sum(r["dataset"] == ds for r in summary) for ds in datasets) + 1.0), height=3.4)
    for ax, ds in zip(axes[0], datasets):
        rows = [r for r in summary if r["dataset"] == ds]
        means = [100 * r["mean"] for r in rows]
        stds = [100 * r["std"] for r in rows]
        colors = ["0.55" if r["strategy"] == BASELINE else "tab:blue" for r in rows]
        xs = list(range(len(rows)))
        ax.bar(xs, means, yerr=stds, color=colors, capsize=4, alpha=0.85)
        for x, r, m, s in zip(xs, rows, means, stds):
            if r["p_vs_baseline"] is not None:
                ax.text(x, m + s, f"p={_fmt_p(r['p_vs_baseline'])}", ha="center", va="bottom", fontsize=7)
        lo = min(m - s for m, s in zip(means, stds))
        hi = max(m + s for m, s in zip(means, stds))
        span = max(hi - lo, 0.5)
        ax.set_ylim(max(0.0, lo - 0.6 * span), min(100.0, hi + 0.4 * span) if hi < 100 else 100.5)
        ax.set_xticks(xs, [r["label"] for r in rows], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("test accuracy (%)", fontsize=8)
        ax.set_title(f"{ds} (mean ± std, {rows[0]['runs']} seeds)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=110)
