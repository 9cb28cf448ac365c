"""`fcs fit --png`: the two plots the users drew by hand.

Left: predicted device memory against batch size, one colour per num_hist (training solid,
validation dashed), at the table's largest frameskip, with the device's memory and the usable
limit (after the margin and the memory outside the allocator) as horizontal lines.
Right: the feasibility map, episode length x frameskip -> the largest num_hist that both fits at the
heatmap's batch size and has windows (`(num_hist + num_pred) * frameskip <= length`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fcs_train.fit.report import GIB, FitReport


def save_fit_png(report: FitReport, path: Path) -> Path:
    """Write the plots of `report` to `path` (PNG)."""
    fig, (ax, hm) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.1, 1]})
    fs = max(r.frameskip for r in report.rows)
    num_hists = sorted({r.num_hist for r in report.rows})
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(num_hists)))
    for h, c in zip(num_hists, colours, strict=True):
        rows = sorted((r for r in report.rows if r.num_hist == h and r.frameskip == fs), key=lambda r: r.batch_size)
        b = [r.batch_size for r in rows]
        ax.plot(b, [(r.train + report.budget.overhead) / GIB for r in rows], "-o", color=c, label=f"num_hist {h} train")
        ax.plot(b, [(r.validation + report.budget.overhead) / GIB for r in rows], "--", color=c,
                label=f"num_hist {h} validation")
    budget = report.budget
    ax.axhline(budget.total / GIB, color="red", lw=1.5, label=f"{budget.name}: {budget.total / GIB:.1f} GiB")
    ax.axhline((budget.usable + budget.overhead) / GIB, color="red", lw=1, ls=":",
               label=f"usable with {budget.margin:.0%} margin")
    ax.set_xscale("log", base=2)
    batches = sorted({r.batch_size for r in report.rows})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
    ax.set_xlabel("batch size (windows per micro-batch)")
    ax.set_ylabel("predicted device memory (GiB, incl. CUDA context)")
    ax.set_title(f"Memory vs batch size ({report.setup} setup, frameskip {fs}"
                 f"{', calibrated' if budget.calibration else ', uncalibrated'})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)

    grid = np.array(report.heatmap, dtype=float)
    im = hm.imshow(grid, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=max(num_hists))
    hm.set_xticks(range(len(report.heatmap_lengths)), [str(x) for x in report.heatmap_lengths], rotation=45)
    hm.set_yticks(range(len(report.heatmap_frameskips)), [str(f) for f in report.heatmap_frameskips])
    for (i, j), v in np.ndenumerate(grid):
        hm.text(j, i, "-" if v == 0 else str(int(v)), ha="center", va="center", fontsize=7,
                color="white" if v < max(num_hists) / 2 else "black")
    hm.set_xlabel("episode length (steps)" + (" - from the store" if report.store else ""))
    hm.set_ylabel("frameskip")
    hm.set_title(f"Largest num_hist that fits (batch {report.heatmap_batch}) and has windows")
    fig.colorbar(im, ax=hm, label="num_hist (0: none)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
