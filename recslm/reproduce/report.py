"""The reproduction's outputs: ``reproduce.md`` (the findings table), ``reproduce.json`` (one
object per finding: claim, paper, effect, ci95, verdict, per-seed values) and
``reproduce.png`` (each effect with its interval)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recslm.jsonfile import write_json
from recslm.reproduce.findings import LEVEL, Finding


def findings_table(findings: Sequence[Finding]) -> str:
    """The Markdown table a user reads (and the README's Findings section copies)."""
    lines = [
        "| row | claim | paper | measured (b - a) | effect | 95 % interval | seeds | verdict |",
        "|---|---|---|---|---:|---|---:|---|",
    ]
    for f in findings:
        low, high = f.ci95
        lines.append(f"| {f.row} | {f.claim} | {f.paper} | {f.b} - {f.a}, {f.metric} | {signed(f.effect)} | [{signed(low)}, {signed(high)}] | {f.n_seeds} | **{f.verdict}** |")
    # a row's findings often share one note (the serving row's latencies, say): print it once
    notes = list(dict.fromkeys(f"- {f.row}: {f.note}" for f in findings if f.note))
    return "\n".join(lines + ([""] + notes if notes else []))


def signed(x: float) -> str:
    """An effect or bound with its sign: four decimals, or two significant digits below 1e-3
    (a pruning row's 6e-6 would otherwise read +0.0000, as if nothing had been measured)."""
    return f"{x:+.4f}" if x == 0 or abs(x) >= 1e-3 else f"{x:+.2e}"


def by_metric(findings: Sequence[Finding]) -> dict[str, list[Finding]]:
    """Findings grouped by metric, in order of first appearance: one figure panel each, since
    an AUC difference, a loss difference and a latency in ms share no scale."""
    out: dict[str, list[Finding]] = {}
    for f in findings:
        out.setdefault(f.metric, []).append(f)
    return out


def write_report(findings: Sequence[Finding], out_dir: Path, header: dict[str, Any]) -> dict[str, Path]:
    """Write the three outputs into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "reproduce.md"
    lines = [f"# recslm reproduce: {header.get('study', '')}", ""]
    lines += [f"- {k}: {v}" for k, v in header.items() if k != "study"]
    lines += ["", f"Effects are mean paired differences over seeds with {LEVEL:.0%} Student-t intervals; verdicts are computed "
              "(recslm/reproduce/findings.py): no signal when the interval contains zero.", "", findings_table(findings), ""]  # fmt: skip
    md.write_text("\n".join(lines))
    js = write_json(out_dir / "reproduce.json", {"header": header, "findings": [f.model_dump(mode="json") for f in findings]})
    png = effects_figure(findings, out_dir / "reproduce.png")
    return {"markdown": md, "json": js, "figure": png}


def effects_figure(findings: Sequence[Finding], path: Path) -> Path:
    """Each finding's effect with its interval, zero marked: a forest plot, one panel (and x
    scale) per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = by_metric(findings)
    sizes = [len(group) for group in panels.values()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 0.42 * len(findings) + 1.0 * len(panels)), height_ratios=sizes, squeeze=False)
    colors = {"holds": "tab:green", "does not hold": "tab:red", "no signal at this scale": "tab:gray"}
    for ax, (metric, group) in zip(axes[:, 0], panels.items()):
        for i, f in enumerate(reversed(group)):
            low, high = f.ci95
            ax.errorbar(f.effect, i, xerr=[[f.effect - low], [high - f.effect]], fmt="o", color=colors[f.verdict], capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(group)), [f"{f.row}: {f.b} - {f.a}" for f in reversed(group)], fontsize=8)
        ax.set_ylim(-0.6, len(group) - 0.4)
        ax.set_xlabel(f"b - a, {metric} (95 % interval over paired seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
