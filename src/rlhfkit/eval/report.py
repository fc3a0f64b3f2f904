"""Plots (PNG) and one self-contained HTML page for a run's report.

Figures are `matplotlib.figure.Figure` objects drawn and saved directly, without pyplot: no global figure
manager, no backend to switch, nothing done when the module is imported.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

PPO_CURVES = [("rm_score", "RM score"), ("gold", "gold reward"), ("kl", "KL(π‖π_SFT) per episode"),
              ("response_length", "response length"), ("clipfrac", "clip fraction"), ("entropy", "entropy")]


def plot_ppo_curves(runs: dict[str, list[dict]], path: Path) -> Path:
    """PPO metrics against episodes, one line per run (e.g. per seed, or β = 0.05 vs β = 0)."""
    fig = Figure(figsize=(13, 6.5))
    axes = fig.subplots(2, 3)
    for ax, (key, title) in zip(axes.flat, PPO_CURVES):
        for label, rows in runs.items():
            points = [(r["episodes"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points), label=label)
        ax.set_title(title)
        ax.set_xlabel("episodes")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def plot_reward_vs_sqrt_kl(curves: dict[str, list[dict]], path: Path, groups: dict[str, str] | None = None) -> Path:
    """Gold and RM reward against √KL (Gao et al. 2022): one curve per method (PPO checkpoints in training order,
    best-of-n by n). Curves of one `groups` value (e.g. one seed) share a colour; best-of-n is dashed."""
    fig = Figure(figsize=(12, 4.5))
    ax_gold, ax_rm = fig.subplots(1, 2)
    colours: dict[str, str] = {}
    n_groups = len({(groups or {}).get(label, label) for label in curves})
    palette = [f"C{i}" for i in range(10)] if n_groups <= 10 else list(colormaps["tab20"].colors)  # > 10: no repeats
    for label, points in curves.items():
        group = (groups or {}).get(label, label)
        colour = colours.setdefault(group, palette[len(colours) % len(palette)])
        x = [math.sqrt(max(0.0, p["kl"])) for p in points]
        style = dict(linestyle="--" if "best-of" in label else "-", marker="o", markersize=4, color=colour,
                     label=label)
        ax_gold.plot(x, [p["gold"] for p in points], **style)
        if all("rm" in p for p in points):
            ax_rm.plot(x, [p["rm"] for p in points], **style)
    for ax, name in ((ax_gold, "gold reward (hidden truth)"), (ax_rm, "reward-model score")):
        ax.set_xlabel("√KL(π‖π_SFT)  (nats^½)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def plot_win_rates(win_rates: dict[str, dict], path: Path) -> Path:
    """Bars with their 95% bootstrap intervals; the dashed line is a coin flip."""
    names = list(win_rates)
    rates = [win_rates[n]["rate"] for n in names]
    low = [win_rates[n]["rate"] - win_rates[n]["ci_low"] for n in names]
    high = [win_rates[n]["ci_high"] - win_rates[n]["rate"] for n in names]
    fig = Figure(figsize=(1.8 + 1.5 * len(names), 4))
    ax = fig.subplots()
    ax.bar(names, rates, yerr=[low, high], capsize=6, color="#4c78a8")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("win rate by gold reward")
    for i, r in enumerate(rates):
        ax.text(i, min(0.97, r + 0.04), f"{r:.2f}", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def plot_rounds(rows: list[dict], path: Path) -> Path:
    """The online loop: the policy's gold reward per round (SFT's as the baseline) and its win rate vs SFT."""
    fig = Figure(figsize=(10, 3.8))
    ax_gold, ax_win = fig.subplots(1, 2)
    rounds = [r["round"] for r in rows]
    ax_gold.plot(rounds, [r["gold"] for r in rows], "o-", label="policy after the round")
    ax_gold.plot(rounds, [r["gold_sft"] for r in rows], "o--", color="grey", label="SFT")
    ax_gold.set_title("mean gold reward (held-out)")
    ax_gold.legend(fontsize=8)
    win = [r["win_vs_sft"] for r in rows]
    ax_win.errorbar(rounds, [w["rate"] for w in win], capsize=5, fmt="o-",
                    yerr=[[w["rate"] - w["ci_low"] for w in win], [w["ci_high"] - w["rate"] for w in win]])
    ax_win.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax_win.set_ylim(0, 1)
    ax_win.set_title("win rate vs SFT by gold")
    for ax in (ax_gold, ax_win):
        ax.set_xlabel("round")
        ax.set_xticks(rounds)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td{_align(r.get(k))}>{html.escape(_fmt(r.get(k)))}</td>" for k in keys)
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _align(value) -> str:
    return ' class="num"' if isinstance(value, (int, float)) else ""


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if value is None:
        return "–"
    return str(value)


def write_html(path: Path, title: str, sections: list[tuple[str, list[dict] | str]], images: list[Path],
               report: dict) -> Path:
    """One page, no external resources: tables, the plots inlined as data URIs, and report.json at the end."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for heading, content in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(_table(content) if isinstance(content, list) else f"<p>{html.escape(content)}</p>")
    for image in images:
        data = base64.b64encode(Path(image).read_bytes()).decode()
        parts.append(f'<figure><img alt="{html.escape(image.stem)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{html.escape(image.name)}</figcaption></figure>")
    parts.append("<h2>report.json</h2><pre>" + html.escape(json.dumps(report, indent=2)) + "</pre>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 10px;"
             "text-align:left}td.num{text-align:right}th{background:#f3f3f3}img{max-width:100%}pre{background:#f7f7f7;padding:1em;"
             "overflow:auto;font-size:12px}figure{margin:1em 0}")
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    path.write_text(page, encoding="utf-8")
    return path
