"""How the CLI shows things: report tables and progress bars (rich). No logic lives here."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from fcs_data.format import FORMAT_VERSION
from fcs_data.schemas import FINDING_KINDS, ValidationReport
from fcs_data.sources.naming import episode_dir_name

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


class Phases:
    """One rich progress display with a bar per phase; `callback(...)` adds a bar on first use."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:>9}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[rate]}"),
            console=err_console,
        )

    def __enter__(self) -> Phases:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def callback(self, name: str, unit: str = "episodes") -> Callable[[int, int], None]:
        task = None

        def update(done: int, total: int) -> None:
            nonlocal task
            if task is None:
                task = self.progress.add_task(name, total=total, unit=unit, rate="")
            self.progress.update(task, completed=done, total=total)

        return update

    def throughput(self, name: str, unit: str = "frames") -> Callable[[int, int, int], None]:
        """`update(done, total, bytes)`, showing items/s and MB/s since the first call."""
        task, t0, done0 = None, 0.0, 0

        def update(done: int, total: int, nbytes: int) -> None:
            nonlocal task, t0, done0
            if task is None:
                task, t0, done0 = self.progress.add_task(name, total=total, unit=unit, rate=""), time.perf_counter(), done
            dt = max(time.perf_counter() - t0, 1e-9)
            rate = f"{(done - done0) / dt:,.0f} {unit}/s  {nbytes / dt / 1e6:,.0f} MB/s" if done > done0 else ""
            self.progress.update(task, completed=done, total=total, rate=rate)

        return update


@contextmanager
def progress_bar(description: str, unit: str = "episodes") -> Iterator[Callable[[int, int], None]]:
    """A single progress bar on stderr; yields `update(done, total)`."""
    with Phases() as phases:
        yield phases.callback(description, unit)


def print_detection(layout: str | None, lines: list[str], out: Console | None = None) -> None:
    """The layout that detection picked and why (nothing when the layout was given)."""
    out = out or console
    if not lines:
        return
    out.print(f"layout {layout} (detected; --layout to choose another)")
    for line in lines:
        out.print(f"  {escape(line)}")


def report_table(report: ValidationReport, max_examples: int = 3) -> Table:
    title = f"{report.kind} {report.path} (" + (f"layout {report.layout})" if report.layout else "no layout matched)")
    table = Table(title=title, title_justify="left")
    table.add_column("severity")
    table.add_column("code", overflow="fold")
    table.add_column("count", justify="right")
    table.add_column("first examples", overflow="fold", ratio=1)
    by_code: dict[str, list] = {}
    for f in report.findings:
        if f.severity != "info":
            by_code.setdefault(f.code, []).append(f)
    order = {"error": 0, "warning": 1}
    for code, items in sorted(by_code.items(), key=lambda kv: (order[kv[1][0].severity], kv[0])):
        sev = items[0].severity
        examples = []
        for f in items[:max_examples]:
            where = f.where()
            line = escape(f"{where}: {f.message}" if where else f.message)
            if f.hint:
                line += f" [dim](hint: {escape(f.hint)})[/dim]"
            examples.append(line)
        if len(items) > max_examples:
            examples.append(f"[dim]... and {len(items) - max_examples} more[/dim]")
        table.add_row(f"[{_STYLE[sev]}]{sev}[/]", code, str(len(items)), "\n".join(examples))
    return table


def print_report(report: ValidationReport, strict: bool, out: Console | None = None) -> None:
    out = out or console
    if any(f.severity != "info" for f in report.findings):
        out.print(report_table(report))
    capacity = report.of("window-capacity")
    if capacity:
        table = Table(title="windows the episodes can serve (num_pred 1)", title_justify="left")
        for col in ("frameskip", "max num_hist (every episode)", "windows", "max num_hist (90 %)", "windows"):
            table.add_column(col, justify="right")
        for f in capacity:
            d = f.data or {}
            table.add_row(str(d.get("frameskip")), str(d.get("num_hist_all")), f"{d.get('windows_all', 0):,}",
                          str(d.get("num_hist_p90")), f"{d.get('windows_p90', 0):,}")
        out.print(table)
    for f in report.findings:
        if f.severity == "info" and f.code != "window-capacity":
            out.print(f"[cyan]info[/cyan] {FINDING_KINDS[f.code][1]}: {escape(f.message)}")
    c = report.counts
    code = report.exit_code(strict)
    verdict = "[bold green]OK[/]" if code == 0 else "[bold red]FAILED[/]"
    out.print(
        f"{verdict}  {report.num_episodes} episodes, {report.num_frames:,} valid frames checked in "
        f"{report.elapsed_s:.2f} s: {c['error']} errors, {c['warning']} warnings"
        + (" (--strict: warnings fail)" if strict and c["warning"] and not c["error"] else "")
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def print_conversion(r) -> None:
    """Summary of a `ConversionResult`."""
    console.print(f"[bold green]wrote[/] {r.store}: {r.num_episodes} episodes, {r.num_frames:,} frames")
    console.print(f"  codec: {r.codec_note}")
    for note in r.conversions:
        console.print(f"  converted: {note}")
    if r.skipped:
        console.print(f"[yellow]skipped {len(r.skipped)} episodes[/]:")
        for i, reasons in sorted(r.skipped.items()):
            console.print(f"  {episode_dir_name(i)}: {'; '.join(reasons[:3])}")
    if r.resumed_shards:
        console.print(f"  resumed: {r.resumed_shards} shards were already done")
    ratio = r.source_bytes / max(r.store_bytes, 1)
    frames_s = r.timings.get("frames", 0.0)
    console.print(
        f"  source {_mb(r.source_bytes)} -> store {_mb(r.store_bytes)} (x{ratio:.2f}); "
        f"{r.seconds:.1f} s total, frames phase {frames_s:.1f} s"
        + (f" ({r.source_bytes / frames_s / 1e6:,.0f} MB/s)" if frames_s else "")
    )
    console.print(f"  peak RSS: main {r.peak_rss_main_mb:,.0f} MB, worker {r.peak_rss_worker_mb:,.0f} MB "
                  f"({r.peak_rss_worker_mb - r.idle_rss_worker_mb:,.0f} MB above an idle worker)"
                  + ("; verified: every frame and array equals the source" if r.verified else ""))


def _hist_line(lengths) -> list[str]:
    import numpy as np

    counts, edges = np.histogram(lengths, bins=min(8, max(1, len(np.unique(lengths)))))
    top = max(counts.max(), 1)
    return [f"{int(lo):>6}-{int(hi):<6} {'#' * max(1, round(30 * c / top)) if c else '':30s} {c}"
            for c, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True)]


def store_summary(store) -> dict:
    """What `fcs info` shows, as JSON-able data: the store's metadata, episode lengths and sizes."""
    import numpy as np

    m = store.metadata
    disk = sum(p.stat().st_size for p in store.path.rglob("*") if p.is_file())
    raw = store.num_frames * (int(np.prod(m.frame_shape)) + 4 * (m.layout.state_dim + m.layout.action_dim))
    return {"path": str(store.path), "num_episodes": store.num_episodes, "num_frames": store.num_frames,
            "episode_lengths": [int(n) for n in store.episode_lengths], "disk_bytes": disk, "raw_bytes": raw,
            "current_format": store.is_current_format, "metadata": m.model_dump(mode="json")}


def print_store_info(store) -> None:
    """Summary tables of an open `Store`."""
    import numpy as np

    m = store.metadata
    summary = store_summary(store)
    disk, raw = summary["disk_bytes"], summary["raw_bytes"]
    lengths = store.episode_lengths
    t = Table(title=f"store {store.path}", title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    rows = [
        ("format", f"fcs_format {m.fcs_format}, layout {m.layout.name}, {m.channel_order}, {m.action_alignment} "
                   "actions"),
        ("episodes", f"{store.num_episodes:,}"),
        ("frames", f"{store.num_frames:,} of {m.frame_shape[1]}x{m.frame_shape[0]}x{m.frame_shape[2]} uint8"),
        ("lengths", f"min {lengths.min()}, median {int(np.median(lengths))}, max {lengths.max()}"),
        ("histogram", "\n".join(_hist_line(lengths))),
        ("codec", f"{m.codec.preset}" + (f" (blosc {m.codec.blosc_cname} level {m.codec.blosc_clevel} "
                                         f"{m.codec.blosc_shuffle})" if m.codec.blosc_cname else "")
         + f", {m.shard_frames} frames per shard"),
        ("size", f"{_mb(disk)} on disk, {_mb(raw)} raw (x{raw / max(disk, 1):.2f})"),
        ("source", f"{m.provenance.source} ({m.provenance.source_layout})"),
        ("created", f"{m.provenance.created} by fcs {m.provenance.fcs_version}"),
    ]
    if m.provenance.conversions:
        rows.append(("converted", "\n".join(m.provenance.conversions)))
    if m.provenance.skipped_episodes:
        rows.append(("skipped", ", ".join(episode_dir_name(i) for i in m.provenance.skipped_episodes)))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    if not store.is_current_format:
        console.print(f"[yellow]note:[/] format {m.fcs_format} stores carry no chunk checksums and may omit "
                      f"all-black shards; rewrite it as format {FORMAT_VERSION} from its source: "
                      f"fcs convert {m.provenance.source} -o NEW.zarr")
    if m.stats is None:
        return
    st = Table(title="statistics over valid steps", title_justify="left")
    longest = max(len(f"action.{f.name}[00]") for f in [*m.layout.state, *m.layout.action])
    st.add_column("dim", no_wrap=True, min_width=longest)
    for col in ("unit", "mean", "std", "min", "max", "q01", "q99"):
        st.add_column(col, justify="left" if col == "unit" else "right")
    keys = ("mean", "std", "min", "max", "q01", "q99")
    for group, stats, fields in (("state", m.stats.state, m.layout.state), ("action", m.stats.action,
                                                                            m.layout.action)):
        for f in fields:
            for d in range(f.start, f.stop):
                name = f"{group}.{f.name}" + (f"[{d - f.start}]" if f.width > 1 else "")
                st.add_row(name, f.unit, *(f"{getattr(stats, k)[d]:.4g}" for k in keys))
    for c, ch in enumerate("RGB"):
        st.add_row(f"rgb.{ch}", "0..255", f"{m.stats.rgb.mean[c]:.4g}", f"{m.stats.rgb.std[c]:.4g}", "", "", "", "")
    console.print(st)


def print_plan_eval(report) -> None:
    """Tables of an `EvalReport` (fcs_train.planning.evaluate): per pair, then the means."""
    s = report.summary()
    cfg = report.config
    console.print(f"[bold]plan-eval[/] {escape(report.checkpoint)} on {escape(report.store)}: {s['pairs']} pairs, "
                  f"horizon {cfg['horizon']}, {report.solver}; episodes: {report.episodes_are} "
                  f"({len(report.episodes)})")
    for note in report.notes:
        console.print(f"  note: {escape(note)}")
    who = ("planned", "oracle", "mean", "random")
    if report.measured:
        pairs = Table(title=f"where the actions put the EE: distance to the goal's EE position (cm); success within "
                            f"{100 * report.success_radius:g} cm", title_justify="left")
        for col in ("episode", "start->goal", *who, "ok", "s"):
            pairs.add_column(col, justify="right", no_wrap=True)
        for r in report.pairs:
            pairs.add_row(str(r.episode), f"{r.start}->{r.goal}", *(f"{100 * r.ee_error[k]:.1f}" for k in who),
                          "yes" if r.success["planned"] else "no", f"{r.seconds:.1f}")
        console.print(pairs)
    means = Table(title=f"means over {s['pairs']} pairs", title_justify="left",
                  caption="oracle: the logged actions; mean: the training mean action; random: uniform in the bounds. "
                          "Latent distances are the model's own view (diagnostics: a plan can fool the model)",
                  caption_justify="left")
    for col in ("", "planned", "oracle", "mean", f"random ({report.random_samples})"):
        means.add_column(col, justify="right", no_wrap=True)
    if report.measured:
        means.add_row("success rate", *(f"{s['success_rate'][k]:.2f}" for k in who))
        means.add_row("EE distance (cm)", *(f"{100 * s['ee_error'][k]:.2f}" for k in who))
    for key, label in (("distance", "latent distance"), ("visual", "  visual"), ("proprio", "  proprio")):
        means.add_row(label, *(f"{s[key][k]:.4g}" for k in who))
    console.print(means)
    if report.measured:
        console.print(f"success (the plan's EE within {100 * report.success_radius:g} cm of the goal's): "
                      f"{s['successes']}/{s['pairs']} ({100 * s['success_rate']['planned']:.0f}%); time per plan "
                      f"{s['seconds_per_plan']:.2f} s (min {s['seconds_min']:.2f}, max {s['seconds_max']:.2f})")
    errors = Table(title="raw actions against the logged ones: mean absolute error", title_justify="left")
    for col in ("field", "unit", "planned", "mean", "planned, last", "mean, last"):
        errors.add_column(col, justify="right", no_wrap=True)
    for name, unit in report.units.items():
        e, f = s["action_error"], s["final_action_error"]
        errors.add_row(name, unit, f"{e['planned'][name]:.3g}", f"{e['mean'][name]:.3g}", f"{f['planned'][name]:.3g}",
                       f"{f['mean'][name]:.3g}")
    console.print(errors)
    warned = sorted({w for r in report.pairs for w in r.warnings})
    for w in warned[:10]:
        console.print(f"  [yellow]warning:[/] {escape(w)}")


def print_closed_loop(report) -> None:
    """The table of a `ClosedLoopReport` (fcs_train.planning.closed_loop): one row per planner and baseline."""
    world = report.world
    console.print(f"[bold]plan-eval --closed-loop[/] {escape(report.checkpoint)}: {len(report.seeds)} episodes of "
                  f"the {world['layout']} world (dataset seed {world['dataset_seed']}), goal {world['goal_steps']} "
                  f"logged steps ahead, up to {report.max_steps} MPC steps of {report.raw_actions_per_step} raw "
                  f"action(s); success: the EE (and a moved cube) within {100 * world['success_radius']:g} cm")
    for note in report.notes:
        console.print(f"  note: {escape(note)}")
    s = report.summary()
    table = Table(title="closed loop: success is the world's verdict", title_justify="left",
                  caption=f"FLOPs counted with FlopCounterMode (attention included); x: against {report.reference}",
                  caption_justify="left")
    for col in ("controller", "success", "EE cm", "steps", "s/plan", "GFLOP/plan", "x FLOPs"):
        table.add_column(col, justify="left" if col == "controller" else "right", no_wrap=True)
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for name, row in s.items():
        gflop = None if row["flops_per_plan"] is None else row["flops_per_plan"] / 1e9
        table.add_row(name, f"{row['successes']}/{row['episodes']} ({100 * row['success_rate']:.0f}%)",
                      fmt(100 * row["final_ee_distance"], ".1f"), fmt(row["steps_to_success"], ".1f"),
                      fmt(row["seconds_per_plan"], ".2f"), fmt(gflop, ".3g"), fmt(row["flops_vs_reference"], ".3f"))
    console.print(table)
    console.print("EE cm: final distance to the goal's EE position; steps: MPC steps to success (mean over successes)")
    for name, what in report.controllers.items():
        console.print(f"  {name}: {escape(what)}")
