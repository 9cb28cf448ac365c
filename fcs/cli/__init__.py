"""`fcs`: validate, convert and train on Isaac Sim Franka cube-stacking episodes, and plan with the model.

One module per command family (`data`, `training`, `planning`), the shared wiring in `core` and how
results are shown in `views`. Importing this package registers every command on `app`; the entry
point is `main` (`fcs = "fcs.cli:main"`, and `python -m fcs`).
"""

# each registers its commands on `app`, in the order `fcs --help` lists them
from fcs.cli import data, training, runs, planning, env  # noqa: F401, I001
from fcs.cli.core import app, main, parse_episode_spec

__all__ = ["app", "main", "parse_episode_spec"]
