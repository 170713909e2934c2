"""distillscape: one-step dataset distillation and the cost surfaces around where one step lands.

Layers, top to bottom (a module imports only its own layer or lower ones; `lint-imports` checks it,
ARCHITECTURE.md says which module owns what):

  apps          tasks/            one console script per task (distill, train, landscape, landing, ...)
  presentation  report/, plots, tracking
  analyses      run, costs, landscape, surface, landing, instances, curvature, early, rl_objective, basins
  training      distill, direct, baseline, rl/, protocols, matching, experts, imported
  core          inner, geometry
  ground        models, data, artifacts, resume, config/
  base          params, stats, seeds, errors

Importing the package imports nothing else: each module is imported where it is used.
"""
