"""How the CLI shows things: report tables and progress bars (rich). No logic lives here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from fcs_data.schemas import FINDING_KINDS, ValidationReport

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


@contextmanager
def progress_bar(description: str, unit: str = "episodes", extra: Callable[[], str] | None = None
                 ) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr; yields `update(done, total)`. `extra()` adds a live text column."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn(unit), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    if extra is not None:
        columns.append(TextColumn("{task.fields[extra]}"))
    with Progress(*columns, console=err_console, transient=False) as prog:
        task = prog.add_task(description, total=None, extra="")

        def update(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total, extra=extra() if extra else "")

        yield update


def report_table(report: ValidationReport, max_examples: int = 3) -> Table:
    table = Table(title=f"{report.kind} {report.path} (layout {report.layout})", title_justify="left")
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
            line = f"{where}: {f.message}" if where else f.message
            if f.hint:
                line += f" [dim](hint: {f.hint})[/dim]"
            examples.append(line)
        if len(items) > max_examples:
            examples.append(f"[dim]... and {len(items) - max_examples} more[/dim]")
        table.add_row(f"[{_STYLE[sev]}]{sev}[/]", code, str(len(items)), "\n".join(examples))
    return table


def print_report(report: ValidationReport, strict: bool) -> None:
    if any(f.severity != "info" for f in report.findings):
        console.print(report_table(report))
    capacity = report.of("window-capacity")
    if capacity:
        table = Table(title="windows the episodes can serve (num_pred 1)", title_justify="left")
        for col in ("frameskip", "max num_hist (every episode)", "windows", "max num_hist (90 %)", "windows"):
            table.add_column(col, justify="right")
        for f in capacity:
            d = f.data or {}
            table.add_row(str(d.get("frameskip")), str(d.get("num_hist_all")), f"{d.get('windows_all', 0):,}",
                          str(d.get("num_hist_p90")), f"{d.get('windows_p90', 0):,}")
        console.print(table)
    for f in report.findings:
        if f.severity == "info" and f.code != "window-capacity":
            console.print(f"[cyan]info[/cyan] {FINDING_KINDS[f.code][1]}: {f.message}")
    c = report.counts
    code = report.exit_code(strict)
    verdict = "[bold green]OK[/]" if code == 0 else "[bold red]FAILED[/]"
    console.print(
        f"{verdict}  {report.num_episodes} episodes, {report.num_frames:,} valid frames checked in "
        f"{report.elapsed_s:.2f} s: {c['error']} errors, {c['warning']} warnings"
        + (" (--strict: warnings fail)" if strict and c["warning"] and not c["error"] else "")
    )
