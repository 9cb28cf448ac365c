"""`PlanConfig`: how a planner searches, validated, from YAML plus `section.key=value` overrides.

Defaults are the reference DINO-WM planner's and the users' server's (CEM: horizon 5, 300 samples,
top 30, 30 iterations, sigma 1, mean initialised at the dataset mean) with the fixes their notes ask
for: bounded samples, one batched rollout per iteration, warm starts shifted by what was executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fcs_train.config import load_validated


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CemConfig(_Section):
    """Cross-entropy method: sample, keep the best `topk`, refit a Gaussian, repeat."""

    samples: int = Field(default=300, ge=2, description="candidate action sequences per iteration")
    topk: int | None = Field(default=None, ge=1, description="elites the next mean and sigma are fitted to "
                                                              "(None: a tenth of the samples, at least 2)")
    iterations: int = Field(default=30, ge=1)
    sigma_init: float = Field(default=1.0, gt=0, description="initial sigma, in normalised action units")
    sigma_min: float = Field(default=0.05, ge=0, description="sigma never shrinks below this")
    early_stop_patience: int | None = Field(
        default=None, ge=1, description="stop after this many iterations without a relative improvement of the best "
                                        "cost above early_stop_tol (None: always run every iteration)")
    early_stop_tol: float = Field(default=1e-3, ge=0)
    warm_iterations: int | None = Field(
        default=None, ge=1, description="iterations of a plan that starts from a warm start (the previous plan "
                                        "shifted by what was executed); None: `iterations` for every plan")
    warm_sigma_init: float | None = Field(default=None, gt=0, description="initial sigma of a warm-started plan "
                                                                          "(None: sigma_init)")

    @model_validator(mode="after")
    def _check(self) -> CemConfig:
        if self.topk is not None and self.topk > self.samples:
            raise ValueError(f"topk {self.topk} is larger than samples {self.samples}")
        return self

    @property
    def elites(self) -> int:
        return self.topk if self.topk is not None else max(2, self.samples // 10)


class ICemConfig(CemConfig):
    """iCEM (Pinneri et al. 2020): CEM with temporally correlated (coloured) samples, a fraction of each
    iteration's elites kept into the next, and a population that shrinks every iteration."""

    samples: int = Field(default=200, ge=2, description="candidates of the first iteration")
    iterations: int = Field(default=6, ge=1)
    noise_beta: float = Field(default=2.0, ge=0, description="colour of the sampling noise along the plan's raw "
                                                             "steps: power spectrum 1/f^beta (0: white, 2: red)")
    keep_elites: float = Field(default=0.3, ge=0, le=1, description="fraction of an iteration's elites evaluated "
                                                                    "again in the next")
    shrink: float = Field(default=1.25, ge=1, description="the population is divided by this every iteration")
    min_samples: int | None = Field(default=None, ge=2, description="the population never shrinks below this "
                                                                    "(None: twice the elites)")
    momentum: float = Field(default=0.1, ge=0, lt=1, description="weight of the previous mean and sigma in each "
                                                                 "refit")

    def population(self, iteration: int) -> int:
        """Candidates drawn in iteration `iteration` (0-based)."""
        floor = self.min_samples if self.min_samples is not None else 2 * self.elites
        return max(min(floor, self.samples), int(self.samples / self.shrink**iteration))


class GradientConfig(_Section):
    """Adam on the action sequence through the differentiable rollout; restarts run as one batch."""

    restarts: int = Field(default=8, ge=1, description="sequences optimised together (the first is the warm start)")
    steps: int = Field(default=60, ge=1)
    lr: float = Field(default=0.1, gt=0, description="Adam learning rate, in normalised action units")
    init_sigma: float = Field(default=1.0, ge=0, description="spread of the random restarts around the warm start")


class BoundsConfig(_Section):
    """Raw action bounds. Per dim the default is the training actions' q01..q99 (from the checkpoint).

    Dims are named `field` (every dim of a layout action field) or `field[i]`.
    """

    default: Literal["quantiles", "minmax"] = Field(
        default="quantiles", description="q01..q99 or min..max of the training actions")
    workspace: list[tuple[float, float]] | None = Field(
        default=None, description="[[x_lo, x_hi], [y_lo, y_hi], [z_lo, z_hi]] in metres, for every position dim of "
                                  "the actions (kinds position, position_start, position_end)")
    dims: dict[str, tuple[float, float]] = Field(default_factory=dict, description="[lo, hi] per dim or field")
    fixed: dict[str, float] = Field(default_factory=dict, description="dims held at a raw value (e.g. gripper open)")
    masked: list[str] = Field(default_factory=list, description="dims the controller drives: not searched, held at "
                                                                "the training mean")
    chain_segments: bool = Field(
        default=True, description="actions that are [start, end] segments (kinds position_start/position_end): each "
                                  "start is the previous end, the first the current proprio, as the logger wrote them")

    @model_validator(mode="after")
    def _check(self) -> BoundsConfig:
        if self.workspace is not None and len(self.workspace) != 3:
            raise ValueError(f"workspace needs 3 ranges (x, y, z), got {len(self.workspace)}")
        for name, (lo, hi) in [*(("workspace", r) for r in self.workspace or []), *self.dims.items()]:
            if not lo < hi:
                raise ValueError(f"bounds of {name}: lo {lo} must be below hi {hi}")
        return self


class PlanConfig(_Section):
    solver: Literal["cem", "gd", "icem", "cem_gd"] = Field(
        default="cem", description="cem; gd (Adam through the rollout); icem; cem_gd (CEM with the cem section, then "
                                   "Adam steps of the gd section from its best gd.restarts candidates)")
    horizon: int = Field(default=5, ge=1, description="planning steps, each `frameskip` raw actions")
    alpha: float = Field(default=1.0, ge=0, description="weight of the proprio embedding MSE in the cost")
    horizon_weighting: float | None = Field(
        default=None, gt=0, description="None: the cost of the final predicted frame only; b: every predicted frame "
                                        "i = 1..H weighted b^i (normalised), so the first steps count too")
    execute_steps: int = Field(default=1, ge=1, description="planning steps returned to execute per plan (MPC)")
    max_batch: int = Field(default=300, ge=1, description="candidate sequences per batched rollout (memory)")
    seed: int = 0
    amp: Literal["auto", "bf16", "off"] = Field(default="auto", description="auto: bf16 on CUDA, off on CPU")
    ood_sigma: float = Field(default=3.0, gt=0, description="warn when a proprio dim is this many sigma from the "
                                                            "training mean")
    scene_check_factor: float = Field(default=10.0, gt=1, description="warn when a frame's reconstruction error is "
                                                                      "this many times the training one")
    input_range: float = Field(default=3.0, gt=0, description="refuse a proprio or executed action further than "
                                                               "this many times the training range's half width from "
                                                               "its centre (bad_request, naming the field and dim)")
    cem: CemConfig = CemConfig()
    icem: ICemConfig = ICemConfig()
    gd: GradientConfig = GradientConfig()
    bounds: BoundsConfig = BoundsConfig()

    @model_validator(mode="after")
    def _check(self) -> PlanConfig:
        if self.execute_steps > self.horizon:
            raise ValueError(f"execute_steps {self.execute_steps} is larger than the horizon {self.horizon}")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def describe_solver(self) -> str:
        c, g, i = self.cem, self.gd, self.icem
        warm = lambda c: f", {c.warm_iterations} when warm-started" if c.warm_iterations else ""  # noqa: E731
        gd = f"{g.restarts} restarts x {g.steps} Adam steps (lr {g.lr:g})"
        if self.solver == "cem":
            return f"CEM {c.samples} samples x {c.iterations} iterations (top {c.elites}{warm(c)})"
        if self.solver == "icem":
            return (f"iCEM {i.samples} samples (/{i.shrink:g} per iteration) x {i.iterations} iterations (top {i.elites}, "
                    f"keep {i.keep_elites:g}, noise beta {i.noise_beta:g}{warm(i)})")
        if self.solver == "cem_gd":
            return f"CEM {c.samples} x {c.iterations} (top {c.elites}{warm(c)}), then gradient descent from its best {gd}"
        return f"gradient descent, {gd}"


# Solvers compared by `fcs plan-eval --closed-loop --solvers ...`: overrides applied to the configured planner.
SOLVER_PRESETS: dict[str, tuple[str, ...]] = {
    "cem": ("solver=cem",),  # the configured CEM (default 300 x 30, the users' planner)
    "cem-warm": ("solver=cem", "cem.warm_iterations=3", "cem.warm_sigma_init=0.5"),
    "icem": ("solver=icem", "icem.warm_iterations=3", "icem.warm_sigma_init=0.5"),
    "cem-gd": ("solver=cem_gd", "cem.samples=100", "cem.topk=10", "cem.iterations=5", "gd.restarts=4", "gd.steps=10",
               "gd.lr=0.05"),
}


def solver_configs(base: PlanConfig, names: list[str]) -> dict[str, PlanConfig]:
    """`{name: base with the preset's overrides}` for preset names (SOLVER_PRESETS)."""
    unknown = [n for n in names if n not in SOLVER_PRESETS]
    if unknown:
        raise ValueError(f"unknown solver preset(s) {', '.join(unknown)}; presets: {', '.join(SOLVER_PRESETS)}")
    return {name: load_validated(PlanConfig, base.model_dump(mode="json"), None, list(SOLVER_PRESETS[name]))
            for name in names}


def load_plan_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> PlanConfig:
    """The YAML file (if any), then `section.key=value` overrides (e.g. `cem.samples=100`), validated."""
    return load_validated(PlanConfig, {}, path, overrides)
