"""Figures of distilled instances, of the landing analysis and of cost surfaces (matplotlib, Agg
backend: no display needed; Plotly and VTK for the 3-D surfaces).

The modules, from the bottom up:
  common      the Agg backend, saving a figure, titles, error bars of means with 95% intervals
  distilled   the distilled batch with its soft labels (pages of it), the distillation's learning curves
  instances   nearest real neighbours, likeness statistics, confusion matrices (distillscape-instances)
  landing     landings against direct training, Hessian spectral densities, loss along basin paths
  early       the early-training analyses (controls, mixing, influence, recognition, fair, curvature along)
  surfaces    cost surfaces in 2-D: contours, rank differences, the report's grid, marks and trajectories
  multiruns   across a multirun's jobs: a metric against a swept setting, the atlas's intervals
  surface3d   a cost surface as an interactive 3-D Plotly figure and as a VTK file for ParaView
"""
from .common import save_figure  # first: it sets the Agg backend before any pyplot import
from .distilled import distilled_figure, distilled_pages, learning_curves_figure
from .early import (controls_figure, curvature_along_figure, fair_figure, influence_figure, mixing_figure,
                    recognition_figure)
from .instances import (KIND_COLORS, STAT_GROUPS, confusion_figure, likeness_figure, neighbours_figure,
                        rate_whiskers)
from .landing import curve_figure, density_figure, trajectory_figure
from .multiruns import interval_figure, sweep_figure
from .surface3d import MARK_COLORS, surface_3d, surface_vtk
from .surfaces import (OFFPLANE_DRAWN, difference_figure, draw_trajectory, drawn_marks, mark_label, not_drawn_text,
                       surface_figure, surface_grid_figure)

__all__ = [
    "KIND_COLORS", "MARK_COLORS", "OFFPLANE_DRAWN", "STAT_GROUPS",
    "confusion_figure", "controls_figure", "curvature_along_figure", "curve_figure", "density_figure",
    "difference_figure", "distilled_figure", "distilled_pages", "draw_trajectory", "drawn_marks", "fair_figure",
    "influence_figure", "interval_figure", "learning_curves_figure", "likeness_figure", "mark_label",
    "mixing_figure", "neighbours_figure", "not_drawn_text", "rate_whiskers", "recognition_figure", "save_figure",
    "surface_3d", "surface_figure", "surface_grid_figure", "surface_vtk", "sweep_figure", "trajectory_figure",
]
