"""One Hydra app per task, each a `distillscape-<task>` console script."""
