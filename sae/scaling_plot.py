"""The sweep's plot: held-out FVU vs n per k with the fitted joint L(n, k), and the loss-vs-compute frontier.

One self-contained plotly HTML file (plotly.js inlined, opens offline); the dashboard embeds it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sae.scaling import Fit, joint_loss


def write_sweep_plot(path: Path, n: np.ndarray, k: np.ndarray, loss: np.ndarray, compute: np.ndarray,
                     joint: Fit | None, frontier: Fit | None, on_frontier: np.ndarray) -> Path:
    """Write the two-panel plot to `path` (.html); arrays are per SAE of the grid."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("held-out FVU vs n latents (lines: joint L(n, k) fit)",
                                                        "held-out FVU vs training compute (frontier fit)"))
    grid = np.geomspace(n.min(), n.max(), 50)
    for i, kk in enumerate(sorted(set(k.tolist()))):
        sel = k == kk
        color = f"hsl({(i * 67) % 360},70%,45%)"
        fig.add_trace(go.Scatter(x=n[sel], y=loss[sel], mode="markers", name=f"k={int(kk)}",
                                 marker={"color": color}), row=1, col=1)
        if joint is not None:
            fitted = joint_loss(np.array(list(joint.coefficients.values())), grid, np.full_like(grid, kk))
            fig.add_trace(go.Scatter(x=grid, y=fitted, mode="lines", line={"color": color}, showlegend=False),
                          row=1, col=1)
        fig.add_trace(go.Scatter(x=compute[sel], y=loss[sel], mode="markers", marker={"color": color},
                                 showlegend=False), row=1, col=2)
    fig.add_trace(go.Scatter(x=compute[on_frontier], y=loss[on_frontier], mode="markers", name="frontier",
                             marker={"symbol": "circle-open", "size": 14, "color": "black"}), row=1, col=2)
    if frontier is not None:
        c = np.geomspace(compute.min(), compute.max(), 50)
        fitted = np.exp(frontier.coefficients["a"]) * c ** frontier.coefficients["b"]
        fig.add_trace(go.Scatter(x=c, y=fitted, mode="lines", name=f"C^{frontier.coefficients['b']:.3f}",
                                 line={"color": "black", "dash": "dash"}), row=1, col=2)
    for col, title in ((1, "n latents"), (2, "training FLOP")):
        fig.update_xaxes(type="log", title_text=title, row=1, col=col)
        fig.update_yaxes(type="log", title_text="held-out FVU", row=1, col=col)
    fig.update_layout(height=480, width=1100, title="SAE sweep")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path
