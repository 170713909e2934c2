"""Where console scripts installed before tasks/cli.py point (`distillscape.tasks.entry:<task>`): the same entry
points, until a reinstall (`pip install -e .`) writes scripts that name tasks.cli."""
from .cli import distill, instances, landing, landscape, report, run, study, train  # noqa: F401
