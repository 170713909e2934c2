"""One self-contained HTML report of a study, laid out along its questions: does one step generalise,
do the distilled instances look like real data, where does one step land on the true task, is the
landing a minimum, what the cost surfaces show, what the early-training reading says, and (given a
multirun) how the answers move with the swept settings. Settings, raw metric tables and versions go to
an appendix.

It reads whatever the output directories hold and does not depend on which analyses ran. Figures are
embedded as base64; interactive surfaces are Plotly figures whose plotly.js is inlined once, so the page
is one file that works offline. The figures it embeds but does not draw (the 2x2 grid, the 3-D surfaces,
the sweep plot) are made by the task from `plots` and handed in as `Made`. The page is the Jinja2
template templates/report.html.j2 (autoescaped); the package hands it plain strings.

The modules, from the bottom up:
  text        numbers as table text (mean ± std, k/n rates, intervals)
  reading     run directories -> `RunRecord` (what one directory holds), multiruns, unfinished parts
  tables      any JSON result as raw metric rows (appendix, the logger's table)
  generalise, instances, landing, certificate, basins, early, surfaces, sweeps
              one module per section: its table and the sentences computed from it
  figures     captions, data files, data URIs, `Made`, the vendored plotly.js
  page        the sections in order, the appendix, rendering the template
  atlas       an atlas multirun (experiment=atlas, jobs that are studies) -> one cross-method table, its
              sentences and what is missing (its own page, templates/atlas.html.j2)
"""
from .basins import basin_pivot, basin_sentences
from .certificate import CERTIFIED, VERDICT_NAMES, certificate_pivot, certificate_summary
from .early import early_training, trajectory_reading, trajectory_summary
from .figures import CAPTIONS, FIGURE_DATA, MIME, PLOTLY_BUNDLE, Made, caption_of, data_files, plotly_js
from .generalise import accuracy_summary, headline, return_summary
from .instances import (LIKENESS_RATES, LIKENESS_STATS, class_coverage, class_coverage_summary, likeness_pivot,
                        likeness_summary, one_step_recall)
from .landing import landing_kinds, landing_pivot, landing_summary
from .page import LIBRARIES, TEMPLATE, render, sections, study_command, versions
from .reading import (NOT_RESULTS, SKIP_DIRS, RunRecord, is_multirun, missing_parts, read_run, read_runs,
                      refused_jobs)
from ..surface import read_surface
from .surfaces import SurfaceGroup, cost_metrics, surface_groups, surface_summary
from .sweeps import SEED_KEYS, SWEEP_METRICS, sweep_groups, swept_keys
from .tables import SKIP_KEYS, Row, all_rows, flat_rows, nested_rows
from .text import binary_count, ci_text, mean_interval, stat_text

__all__ = [
    "CAPTIONS", "CERTIFIED", "FIGURE_DATA", "LIBRARIES", "LIKENESS_RATES", "LIKENESS_STATS", "MIME", "NOT_RESULTS",
    "PLOTLY_BUNDLE", "SEED_KEYS", "SKIP_DIRS", "SKIP_KEYS", "SWEEP_METRICS", "TEMPLATE", "VERDICT_NAMES",
    "Made", "Row", "RunRecord", "SurfaceGroup",
    "accuracy_summary", "all_rows", "basin_pivot", "basin_sentences", "binary_count", "caption_of", "certificate_pivot", "certificate_summary",
    "ci_text", "class_coverage", "class_coverage_summary", "cost_metrics", "data_files", "early_training",
    "flat_rows", "headline", "is_multirun", "landing_kinds", "landing_pivot", "landing_summary", "likeness_pivot",
    "likeness_summary", "mean_interval", "missing_parts", "nested_rows", "one_step_recall", "plotly_js",
    "read_run", "read_runs", "read_surface", "refused_jobs", "render", "return_summary", "sections",
    "stat_text", "study_command", "surface_groups", "surface_summary", "sweep_groups", "swept_keys",
    "trajectory_reading", "trajectory_summary", "versions",
]
