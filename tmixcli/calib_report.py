"""The calibration's report: per-layer importance bars, the eval rows and the recommendation; the importance chart."""

from __future__ import annotations

from pathlib import Path

from tmixcli.sizes import count


def format_report(profile: dict) -> str:
    """Per-layer importance bars, the eval rows and the recommendation."""
    imp = profile["importance"]
    top = max(imp) or 1.0
    lines = ["layer  importance  tail-sum"]
    for i, v in enumerate(imp):
        lines.append(f"{i:5d}  {v:10.5f}  {sum(imp[i:]):8.4f}  " + "#" * round(30 * v / top))
    lines.append(f"candidates: {profile['candidates']} (tolerance {profile['settings']['tolerance']})")
    for name, s in profile["eval"].items():
        extra = "" if name == "dense" else (f"  agree {s['agreement']:.0%}  same text "
                                            f"{s.get('text_agreement', s['agreement']):.0%}  KL {s['kl']:.4f}")
        lines.append(f"{name:12s} {s['correct']}/{s['n']}{extra}")
    if profile.get("facts"):
        for name, s in profile["facts"]["methods"].items():
            lines.append(f"facts {name:6s} {s['correct']}/{s['n']} (dense {s['dense_correct']}/{s['n']})")
    at = f" at {profile['settings']['length']} tokens" if "length" in profile["settings"] else ""
    if "no_signal" in profile:
        lines.append(f"recommended start layer: none: {profile['no_signal']}")
        lines.append("profile not saved")
    elif profile["start_layer"] is None:
        lines.append("recommended start layer: not verified (eval skipped with --cases 0; nothing saved)")
    elif profile["verified"]:
        lines.append(f"recommended start layer: {profile['start_layer']} (verified{at})")
    else:
        lines.append(f"recommended start layer: {profile['start_layer']} (no candidate passed{at}: "
                     "keeping every layer dense)")
    if "path" in profile:
        lines.append(f"profile saved: {profile['path']}")
        lines.append(override_line(profile))
    elif "not_saved" in profile:
        lines.append(f"profile not saved: {profile['not_saved']}; use --start-layer {profile['start_layer']} for "
                     "prompts this short")
    elif "save_error" in profile:
        lines.append(f"profile not saved (use --start-layer {profile['start_layer']} instead)")
    return "\n".join(lines)


def override_line(profile: dict) -> str:
    """What a saved profile changes: later runs of the model take its start layer instead of the shipped or default
    one, until its file is deleted."""
    n = profile["eval"]["dense"]["n"]
    how = f"verified on {count(n, 'case')}" if profile["verified"] else "no candidate passed"
    before = profile["without_profile"]
    return (f"later runs of this model (ask, prefill, chat, bench) use its start layer {profile['start_layer']} "
            f"({how}) instead of start layer {before['start_layer']} ({before['source']}); delete the file to go "
            "back")


def plot_importance(importance: list[float], start: int | None, path: Path) -> None:
    """Bar chart of per-layer importance with the chosen start layer (a file type `check_plot` accepted)."""
    from matplotlib.figure import Figure

    from tmixcli.plotfile import save_figure

    fig = Figure(figsize=(8, 3.5), layout="tight")
    ax = fig.add_subplot()
    ax.bar(range(len(importance)), importance, color="tab:blue")
    if start is not None:
        ax.axvline(start - 0.5, color="tab:red", linestyle="--", label=f"start layer {start}")
        ax.legend()
    ax.set_xlabel("layer")
    ax.set_ylabel("|d NLL / d alpha| (nats)")
    ax.set_title("Answer loss sensitivity to the middle attention region")
    save_figure(fig, path)
