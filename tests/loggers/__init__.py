"""Datasets written the way each logger's own code writes them (never through fcs).

One writer per logger version, each citing the file and commit it reproduces: `v1` (data_logger.py),
`min_logger` (min_data_logger.py), `keyframe` (keyframe_data_logger.py), `primitive` (the primitive logger,
from its authors' documentation), `isaaclab` (Isaac Lab's recorder and Mimic). `sim` stands in for
Isaac Sim. These are the ground truth of the logger tests: a misreading that fcs's own generator
(`fcs synth`) shares with fcs's readers cannot pass them.
"""
