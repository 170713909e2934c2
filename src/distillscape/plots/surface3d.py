"""One cost surface outside matplotlib: an interactive 3-D Plotly figure (the report) and a VTK file for
ParaView, with the same marked points as the 2-D figures (plotly, scipy and meshio imported when used)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifacts import atomic_write
from ..surface import metrics_of
from .surfaces import _marks, _surface_values, drawn_marks, mark_label, not_drawn_text


MARK_COLORS = ("#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")  # matplotlib's C1.. (the 2-D marks)


def surface_3d(surface: dict, title: str):
    """One cost surface as an interactive 3-D Plotly figure: a surface per metric (log10 for losses), a
    dropdown switching between them, and the marked points (init, landing, minimum, ...) drawn on the
    surface at their projections, named with their distance off the plane."""
    import plotly.graph_objects as go
    from scipy.interpolate import RegularGridInterpolator

    metrics = metrics_of(surface) or [k for k in surface if "/" in k]
    metrics = [m for m in metrics if np.asarray(surface[m]).ndim == 2]
    a, b = np.asarray(surface["axis0"], float), np.asarray(surface["axis1"], float)
    dirs = [str(d) for d in surface.get("direction_names", [])] or ["axis 0", "axis 1"]
    fig, visible = go.Figure(), []
    shown, left_out = drawn_marks(surface)
    for i, metric in enumerate(metrics):
        values, logged = _surface_values(surface, metric)
        label = f"log10 {metric}" if logged else metric
        fig.add_trace(go.Surface(x=a, y=b, z=values.T, colorscale="Viridis", name=label, visible=i == 0,
                                 colorbar={"title": {"text": label}}, hovertemplate="%{x:.3g}, %{y:.3g}: %{z:.4g}"))
        visible.append(metric)
        if shown:
            finite = np.where(np.isfinite(values), values, np.nanmax(np.where(np.isfinite(values), values, -np.inf)))
            at = RegularGridInterpolator((a, b), finite, bounds_error=False, fill_value=None)
            for k, name, xy, off in shown:
                # a legend entry per point, not a text label beside it: labels of nearby points overlapped
                x, y = float(np.asarray(xy, float)[0]), float(np.asarray(xy, float)[1])
                fig.add_trace(go.Scatter3d(
                    x=[x], y=[y], z=at([[x, y]]), mode="markers", visible=i == 0, name=mark_label(name, off),
                    marker={"size": 8, "color": MARK_COLORS[k % len(MARK_COLORS)],
                            "symbol": "circle-open" if off > 1e-3 else "circle", "line": {"width": 2, "color": "black"}},
                    hovertemplate=f"{mark_label(name, off)}<br>%{{x:.3g}}, %{{y:.3g}}: %{{z:.4g}}<extra></extra>"))
                visible.append(metric)
    buttons = [{"label": m, "method": "update",
                "args": [{"visible": [v == m for v in visible]},
                         {"scene.zaxis.title.text": f"log10 {m}" if _surface_values(surface, m)[1] else m}]}
               for m in metrics]
    first = metrics[0] if metrics else ""
    fig.update_layout(
        title={"text": title + (f"<br><sub>{not_drawn_text(left_out)}</sub>" if left_out else ""), "font": {"size": 13}},
        height=600, margin={"l": 10, "r": 10, "t": 60, "b": 10},
        showlegend=bool(shown),  # plotly shows no legend for a single named trace: one marked point kept its name
        legend={"x": 0.0, "y": 0.0, "xanchor": "left", "yanchor": "bottom", "bgcolor": "rgba(255,255,255,0.8)"},
        # the camera further out than plotly's default (1.25, 1.25, 1.25): there the titles of the two
        # bottom axes ran out of the figure
        scene={"camera": {"eye": {"x": 1.55, "y": 1.55, "z": 1.05}},
               "xaxis": {"title": {"text": dirs[0]}}, "yaxis": {"title": {"text": dirs[1] if len(dirs) > 1 else "axis 1"}},
               "zaxis": {"title": {"text": (f"log10 {first}" if first and _surface_values(surface, first)[1] else first)}}},
        updatemenus=[{"buttons": buttons, "direction": "down", "x": 0.0, "xanchor": "left", "y": 1.0,
                      "yanchor": "top", "showactive": True}] if len(metrics) > 1 else [])
    return fig


def surface_vtk(surface: dict, path) -> Path:
    """One cost surface for ParaView: an XML unstructured grid (.vtu, meshio) of quads over the plane's
    grid (z = 0), every metric as point data (and log10 of each loss); "Warp By Scalar" lifts it. The
    marked points go beside it as <stem>_marks.vtu, vertices with their off-plane distance."""
    import meshio

    path = Path(path)
    a, b = np.asarray(surface["axis0"], float), np.asarray(surface["axis1"], float)
    A, B = np.meshgrid(a, b, indexing="ij")
    points = np.column_stack([A.ravel(), B.ravel(), np.zeros(A.size)])
    n0, n1 = len(a), len(b)
    idx = np.arange(n0 * n1).reshape(n0, n1)
    quads = np.column_stack([idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()])
    metrics = metrics_of(surface) or [k for k in surface if "/" in k]
    data = {}
    for m in metrics:
        v = np.asarray(surface[m], float)
        if v.shape == (n0, n1):
            data[m.replace("/", "_")] = v.ravel()
            if m.endswith("/loss") and np.all(v > 0):
                data["log10_" + m.replace("/", "_")] = np.log10(v).ravel()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: meshio.write(tmp, meshio.Mesh(points, [("quad", quads)], point_data=data),
                                                file_format="vtu"))
    marks = _marks(surface)
    if marks:
        pts = np.array([[*np.asarray(xy, float)[:2], 0.0] for _, xy, _ in marks])
        mpath = path.with_name(path.stem + "_marks.vtu")
        atomic_write(mpath, lambda tmp: meshio.write(
            tmp, meshio.Mesh(pts, [("vertex", np.arange(len(marks))[:, None])],
                             point_data={"offplane": np.array([o for *_, o in marks]),
                                         "index": np.arange(len(marks), dtype=float)}), file_format="vtu"))
    return path
