"""`ValidationReport`: findings with a stable code, where they are, and what to do.

Every finding kind is registered in `FINDING_KINDS` with its severity and a title, so codes are
stable across releases and scripts can match on them (`fcs validate --json`).
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

Severity = Literal["error", "warning", "info"]

FINDING_KINDS: dict[str, tuple[Severity, str]] = {
    # errors: the data cannot be trusted or read
    "missing-file": ("error", "a required file is missing"),
    "unreadable-file": ("error", "a file cannot be read (truncated or corrupt)"),
    "unsafe-pickle": ("error", "a pickle refers to code; refused without running it"),
    "obs-dtype": ("error", "observation frames have the wrong dtype"),
    "obs-rank": ("error", "observation tensor is not (T, H, W, C)"),
    "obs-channel-position": ("error", "observation channels are not last"),
    "obs-resolution": ("error", "observation frames have the wrong resolution"),
    "obs-values": ("error", "float frames are not whole numbers in 0..255"),
    "state-dim": ("error", "state dimension differs from the layout"),
    "action-dim": ("error", "action dimension differs from the layout"),
    "row-count": ("error", "rows of states/actions differ from the episode count"),
    "length-mismatch": ("error", "metadata length differs from the frames in obses"),
    "length-exceeds-tmax": ("error", "metadata length exceeds T_max of states/actions"),
    "missing-episode-dir": ("error", "an episode directory listed in the metadata is missing"),
    "nonfinite": ("error", "NaN or Inf inside an episode's valid steps"),
    "empty-dataset": ("error", "no episodes"),
    "step-files": ("error", "per-step files are missing, duplicated or misnamed"),
    "frame-index": ("error", "keyframe indices do not increase"),
    "action-anchor": ("error", "segment actions do not start (end) at the EE position observed: misaligned data"),
    "bad-dataset": ("error", "a dataset is missing, a group or link, empty, or of the wrong dtype or shape"),
    "layout-undetected": ("error", "no built-in layout matches the dataset (each one's first mismatch in data)"),
    "layout-ambiguous": ("error", "more than one built-in layout matches the dataset"),
    # store errors
    "store-format": ("error", "not an fcs store, or an unsupported format version"),
    "store-shape": ("error", "store arrays disagree with episode_ends"),
    "store-stats": ("error", "normalisation statistics missing or inconsistent"),
    "store-chunk": ("error", "a chunk is missing, truncated, fails its checksum or does not decode"),
    # warnings: probably wrong, worth a look
    "unlisted-episode-dir": ("warning", "episode directory not listed in the metadata"),
    "out-of-bounds": ("warning", "values outside the layout bounds"),
    "quaternion-norm": ("warning", "quaternion norm differs from 1"),
    "zero-state": ("warning", "all-zero state rows (failed state extraction)"),
    "out-of-reach": ("warning", "end-effector positions out of the robot's reach"),
    "frozen-frames": ("warning", "identical consecutive frames while the robot moves (logger stall)"),
    "constant-frame": ("warning", "black or constant frames"),
    "velocity-mismatch": ("warning", "joint velocities disagree with finite differences of positions"),
    "action-alignment": ("warning", "actions match the opposite alignment better than the declared one"),
    "action-anchor-outliers": ("warning", "some steps' segment actions do not start (end) at the EE position observed"),
    "segment-continuity": ("warning", "a segment action does not start where the previous one ended"),
    "gripper-values": ("warning", "gripper commands other than 0 (open) and 1 (closed)"),
    "quaternion-order": ("warning", "the quaternions look stored in the other order (wxyz / xyzw)"),
    "channel-order": ("warning", "the frames' channel order looks reversed against the layout"),
    "metadata-missing": ("warning", "metadata missing or incomplete; lengths taken from the frames"),
    # info
    "store-format-old": ("info", "an older store format, readable; rewrite it for checksums"),
    "window-capacity": ("info", "windows the dataset can serve per frameskip"),
    "conversion": ("info", "how the converter will bring the source to the store's conventions"),
}

MAX_STEPS_LISTED = 20


def printable(text: str | None) -> str | None:
    """`text` with undecodable bytes of a file name (surrogates) shown as U+FFFD, so it prints and serialises."""
    if text is None or not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return text
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


class Finding(BaseModel):
    """One thing the validator noticed, located as precisely as it can be."""

    model_config = ConfigDict(extra="forbid")

    severity: Severity
    code: str
    message: str
    episode: int | None = None
    file: str | None = None
    field: str | None = None
    steps: list[int] = Field(default_factory=list, description=f"first {MAX_STEPS_LISTED} time steps")
    num_steps: int = Field(default=0, description="how many time steps are affected in total")
    hint: str | None = None
    data: dict[str, float | int | str | list[int] | list[float] | list[str] | dict[str, str]] | None = None

    @field_validator("message", "file", "field", "hint")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return printable(value)

    @classmethod
    def make(
        cls,
        code: str,
        message: str,
        *,
        episode: int | None = None,
        file: str | None = None,
        field: str | None = None,
        steps: list[int] | None = None,
        hint: str | None = None,
        data: dict | None = None,
    ) -> Finding:
        if code not in FINDING_KINDS:
            raise KeyError(f"unregistered finding code {code!r}")
        steps = [int(s) for s in (steps or [])]
        return cls(
            severity=FINDING_KINDS[code][0],
            code=code,
            message=message,
            episode=episode,
            file=file,
            field=field,
            steps=steps[:MAX_STEPS_LISTED],
            num_steps=len(steps),
            hint=hint,
            data=data,
        )

    def where(self) -> str:
        parts = []
        if self.episode is not None:
            parts.append(f"episode {self.episode}")
        if self.field:
            parts.append(f"field {self.field}")
        if self.steps:
            shown = self.steps[:5]
            more = self.num_steps - len(shown)
            label = "step" if self.num_steps == 1 else "steps"
            parts.append(f"{label} " + ",".join(map(str, shown)) + (f" (+{more} more)" if more else ""))
        if self.file and self.episode is None:
            parts.append(self.file)
        return ", ".join(parts)


class ValidationReport(BaseModel):
    """Everything `fcs validate` found in one dataset or store. JSON-serialisable."""

    model_config = ConfigDict(extra="forbid")

    path: str
    kind: Literal["source", "store"]
    layout: str | None = Field(description="the layout the data was checked against; None when none was found")

    @field_validator("path")
    @classmethod
    def _printable_path(cls, value: str) -> str:
        return printable(value) or ""
    num_episodes: int = 0
    num_frames: int = 0
    episodes_checked: list[int] = Field(default_factory=list)
    episode_lengths: dict[int, int] = Field(
        default_factory=dict, description="valid steps of each checked episode without errors"
    )
    elapsed_s: float = 0.0
    detected: list[str] = Field(default_factory=list, description="how the layout was detected (when not given)")
    findings: list[Finding] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _drop_computed(cls, data: object) -> object:
        """A report read back from its JSON carries `counts`, which is computed, not stored."""
        if isinstance(data, dict) and "counts" in data:
            data = {k: v for k, v in data.items() if k != "counts"}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def counts(self) -> dict[str, int]:
        c = Counter(f.severity for f in self.findings)
        return {s: c.get(s, 0) for s in ("error", "warning", "info")}

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def of(self, code: str) -> list[Finding]:
        return [f for f in self.findings if f.code == code]

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    def bad_episodes(self) -> dict[int, list[str]]:
        """Episodes with at least one error, with the messages (what `--skip-bad` skips)."""
        out: dict[int, list[str]] = {}
        for f in self.findings:
            if f.severity == "error" and f.episode is not None:
                out.setdefault(f.episode, []).append(f"{f.code}: {f.message}")
        return out

    def exit_code(self, strict: bool = False) -> int:
        """0 ok, 1 errors (or warnings with strict)."""
        c = self.counts
        return 1 if c["error"] or (strict and c["warning"]) else 0
