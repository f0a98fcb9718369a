"""Drawing a snapshot: a pure function from ``Snapshot`` to rich renderables.

Nothing here reads Redis or the clock (the snapshot carries Redis's time), so every frame
can be tested with plain data. Colour only underlines what the words already say (states
are written out, bars are drawn with two different characters), so the screen reads on a
monochrome terminal too. At 80 columns the tables keep every column the issue asks for
and shorten ids; wider terminals get the slaves' ip, held units and job descriptions.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from rqcluster.events import Event
from rqcluster.snapshot import JobView, SlaveView, Snapshot, UnitRun

WIDE = 110                 # columns from which the tables show their optional columns
WIDEST = 140               # ... and the jobs table its descriptions
KEEP_FINISHED = 300.0      # seconds a finished job stays on the screen
BAR_WIDTH = 10
SPARKS = "▁▂▃▄▅▆▇█"

SLAVE_STYLE = {"busy": "bold green", "idle": "cyan", "dead": "bold red",
               "unknown": "yellow", "draining": "yellow", "drained": "dim"}
JOB_STYLE = {"submitted": "dim", "running": "bold blue", "done": "green",
             "failed": "bold red", "cancelled": "yellow"}
EVENT_STYLE = {"job-done": "green", "job-failed": "bold red", "job-cancelled": "yellow",
               "slave-joined": "cyan", "slave-left": "yellow", "slave-silent": "bold red",
               "unit-moved": "magenta", "unit-retried": "magenta",
               "unit-stolen": "blue", "unit-drained": "yellow", "slave-draining": "yellow",
               "result-ignored": "yellow"}


def render(snap: Snapshot, width: int = 80, height: int | None = None,
           footer: str | None = None) -> RenderableType:
    """The whole dashboard for a terminal ``width`` columns wide; with ``height``, the
    job and event lists are cut so the frame fits (slaves come first)."""
    wide = width >= WIDE
    jobs = visible_jobs(snap)
    events = list(snap.events)
    slaves = list(snap.slaves)
    if height is not None:
        # At 80 columns the header's second line may wrap: leave it a line.
        slaves, jobs, events = fit(height - (0 if wide else 1), slaves, jobs, events)
    hidden = len(visible_jobs(snap)) - len(jobs)
    parts: list[RenderableType] = [header(snap), slave_table(snap, slaves, wide),
                                   job_table(snap, jobs, wide, width >= WIDEST, hidden),
                                   stream_line(snap), event_table(events)]
    if footer:
        parts.append(Text(footer, style="dim"))
    return Group(*parts)


# Lines a section takes beyond its rows: title, column headings, the rule under them.
TABLE_CHROME = 3
FIXED_LINES = 2 + 1 + 1  # header, results-stream line, footer


def fit(height: int, slaves: list[SlaveView], jobs: list[JobView], events: list[Event]
        ) -> tuple[list[SlaveView], list[JobView], list[Event]]:
    """Cut the lists so the frame is at most ``height`` lines: slaves first (leaving a
    few rows for jobs and events), then at least three jobs and three events, then more
    jobs, then more events. Each list keeps a line for "+N more" or "no jobs"."""
    room = height - FIXED_LINES - 3 * TABLE_CHROME - 2
    if len(slaves) > room - 6:
        slaves = slaves[:max(1, room - 7)]
        room -= 1  # "+N more"
    room -= len(slaves)
    n_jobs = min(len(jobs), max(0, min(3, room)))
    room -= n_jobs
    n_events = min(len(events), max(0, min(3, room)))
    room -= n_events
    extra_jobs = min(len(jobs) - n_jobs, max(0, room))
    room -= extra_jobs
    n_events += min(len(events) - n_events, max(0, room))
    return slaves, jobs[:n_jobs + extra_jobs], events[len(events) - n_events:]


def visible_jobs(snap: Snapshot) -> list[JobView]:
    """Unfinished jobs, then jobs that ended within KEEP_FINISHED seconds, newest first."""
    active = [j for j in snap.jobs if not j.terminal]
    recent = [j for j in snap.jobs if j.terminal and j.finished is not None
              and snap.now - j.finished <= KEEP_FINISHED]
    return active + recent


# --- sections ------------------------------------------------------------------------------

def header(snap: Snapshot) -> RenderableType:
    b = snap.broker
    aof = ("AOF on", "") if b.aof else ("AOF ?", "") if b.aof is None else ("AOF OFF",
                                                                           "bold red")
    facts = [(f"Redis {b.version or '?'}", ""),
             (f"{size(b.memory) if b.memory is not None else '?'} used", ""), aof,
             (f"{b.clients if b.clients is not None else '?'} clients", "")]
    line1 = Text(b.url, style="bold")
    for fact, style in facts:
        line1.append(" · ")
        line1.append(fact, style=style)
    line2 = Text()
    for role in snap.roles:
        line2.append(f"{role.role} ", style="bold")
        line2.append(f"{role.configured} ")
        if role.alive:
            line2.append("alive", style="green")
            if role.node and role.node != role.configured:
                line2.append(f" (as {role.node})")
        else:
            line2.append("DOWN", style="bold red")
        line2.append(" · ")
    if snap.submitted:
        line2.append(f"{snap.submitted} job{'s' if snap.submitted > 1 else ''} to assign · ",
                     style="yellow")
    line2.append(clock(snap.now), style="dim")
    return Group(line1, line2)


def slave_table(snap: Snapshot, slaves: list[SlaveView], wide: bool) -> Table:
    alive = sum(1 for s in snap.slaves if s.alive)
    table = _table(f"Slaves  {alive}/{len(snap.slaves)} alive · "
                   f"{sum(s.throughput for s in snap.slaves):.2f} units/s")
    table.add_column("slave", max_width=16)
    if wide:
        table.add_column("ip", no_wrap=True)
    table.add_column("perf cfg/obs" if wide else "perf", no_wrap=True, justify="right")
    table.add_column("state", no_wrap=True)
    table.add_column("beat", no_wrap=True, justify="right")
    table.add_column("unit")
    table.add_column("for", no_wrap=True, justify="right")
    table.add_column("done", no_wrap=True, justify="right")
    table.add_column("u/s", no_wrap=True, justify="right")
    table.add_column("last min", no_wrap=True)
    table.add_column("queue", no_wrap=True, justify="right")
    if wide:
        table.add_column("held", no_wrap=True, justify="right")
        table.add_column("lost", no_wrap=True, justify="right")
    peak = max((max(s.rate) for s in snap.slaves), default=0)
    for s in slaves:
        row: list[RenderableType] = [cut(s.name, "bold" if s.alive else "")]
        if wide:
            row.append(s.ip or "?")
        row += [performance(s), Text(s.state + (" joined" if s.joined else ""),
                                     style=SLAVE_STYLE.get(s.state, "")),
                seconds(s.beat_age) if s.beat_age is not None else "-",
                unit_cell(s.running, wide), running_for(s.running),
                str(s.units_done), f"{s.throughput:.2f}", sparkline(s.rate, peak),
                str(s.queued)]
        if wide:
            row += [str(s.held), Text(str(s.lost), style="red" if s.lost else "")]
        table.add_row(*row)
    if len(slaves) < len(snap.slaves):
        table.add_row(Text(f"+{len(snap.slaves) - len(slaves)} more", style="dim"))
    return table


def job_table(snap: Snapshot, jobs: list[JobView], wide: bool, widest: bool = False,
              hidden: int = 0) -> Table:
    running = sum(1 for j in snap.jobs if not j.terminal)
    table = _table(f"Jobs  {running} unfinished · {len(snap.jobs)} listed")
    table.add_column("job", no_wrap=True)  # whole, to paste into `rqcluster status`
    table.add_column("kind", max_width=10)
    table.add_column("state", no_wrap=True)
    table.add_column("progress", no_wrap=True)
    table.add_column("elapsed" if wide else "time", no_wrap=True, justify="right")
    table.add_column("eta", no_wrap=True, justify="right")
    table.add_column("retry/lost/moved" if wide else "r/l/m", no_wrap=True, justify="right")
    table.add_column("per slave / error" if wide else "split")
    if widest:
        table.add_column("description")
    if not jobs:
        table.add_row(Text("no jobs", style="dim"))
    for j in jobs:
        row: list[RenderableType] = [
            cut(j.id), cut(j.kind), Text(j.state, style=JOB_STYLE.get(j.state, "")), progress(j),
            seconds(j.elapsed), seconds(j.eta) if j.eta is not None else "-",
            retries(j), detail(j)]
        if widest:
            row.append(cut(j.description, "dim"))
        table.add_row(*row)
    if hidden:
        table.add_row(Text(f"+{hidden} more", style="dim"))
    return table


def stream_line(snap: Snapshot) -> Text:
    st = snap.stream
    text = Text.assemble(("Results ", "bold"),
                         f"{st.length} in stream · {st.pending} pending · lag {st.lag} · ")
    text.append(f"{st.reducers_alive} reducer{'s' if st.reducers_alive != 1 else ''} alive",
                style="" if st.reducers_alive else "bold red")
    if st.consumers:
        folded = sum(c.folded for c in st.consumers)
        text.append(f" · {folded} folded")
    return text


def event_table(events: list[Event]) -> Table:
    table = _table("Events")
    table.add_column("time", no_wrap=True, style="dim")
    table.add_column("event", no_wrap=True)
    table.add_column("details")
    if not events:
        table.add_row("", Text("nothing yet", style="dim"), "")
    for e in events:
        table.add_row(clock(e.at), Text(e.event, style=EVENT_STYLE.get(e.event, "")),
                      cut(" ".join(f"{k}={v}" for k, v in e.fields.items())))
    return table


# --- cells ---------------------------------------------------------------------------------

def _table(title: str) -> Table:
    # The box's blank divider is the only gap between columns: 80 columns are precious.
    return Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                 show_edge=False, pad_edge=False, padding=0, expand=False,
                 header_style="bold")


def cut(text: str, style: str = "") -> Text:
    """A cell of one line, shortened with an ellipsis when its column is narrowed (only
    the columns built from these may shrink; the others keep their width)."""
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def performance(s: SlaveView) -> str:
    if s.performance is None:
        return "?"
    cfg = "auto" if s.auto else f"{s.performance:g}"
    return f"{cfg}/{s.observed:.2g}" if s.observed is not None else cfg


def unit_cell(runs: Iterable[UnitRun], wide: bool) -> Text:
    text = cut("")
    for i, r in enumerate(runs):
        if i:
            text.append(" ")
        job, _, index = r.unit.rpartition(":")
        name = r.unit if wide else f"{job[-6:]}:{index}"
        text.append(name if r.worker_alive else f"{name} lost",
                    style="" if r.worker_alive else "bold red")
    return text if text else cut("-", "dim")


def running_for(runs: tuple[UnitRun, ...]) -> str:
    longest = max((r.seconds for r in runs if r.seconds is not None), default=None)
    return seconds(longest) if longest is not None else "-"


def progress(j: JobView) -> Text:
    """A bar of two characters (done / to do) plus ``done/total``: reads without colour."""
    if j.total is None:
        return Text("waiting" if j.waiting else "not placed", style="dim")
    filled = round(BAR_WIDTH * j.done / j.total) if j.total else BAR_WIDTH
    style = JOB_STYLE.get(j.state, "")
    return Text.assemble(("█" * filled, style), ("░" * (BAR_WIDTH - filled), "dim"),
                         f" {j.done}/{j.total}")


def retries(j: JobView) -> str:
    """``retries/lost/moved``; ``?`` where the counts were not read (very large jobs)."""
    return "/".join("?" if n is None else str(n) for n in (j.retries, j.lost, j.moved))


def detail(j: JobView) -> Text:
    if j.error:
        return cut(j.error, "red")
    if j.waiting:
        return cut(j.waiting, "yellow")
    killed = f"killed {j.killed} " if j.killed else ""
    return cut(killed + " ".join(f"{s} {n}" for s, n in j.per_slave.items()))


def sparkline(values: tuple[int, ...], peak: int) -> str:
    """One character per bucket; "·" for none, so an idle minute reads without colour."""
    if peak <= 0:
        return "·" * len(values)
    return "".join("·" if v <= 0 else SPARKS[min(len(SPARKS) - 1,
                                                 (v * len(SPARKS) - 1) // peak)]
                   for v in values)


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.1f}s"
    if value < 60:
        return f"{value:.0f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}"
    if value < 86400 * 2:
        return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}"
    return f"{value / 86400:.0f}d"


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def clock(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%H:%M:%S")
