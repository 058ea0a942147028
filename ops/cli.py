"""Operator commands: replay, tail, report-events, topics, demo. Each imports its heavy half when it runs.

Connection settings are the worker's (REGIMETRY_BROKER_URL, REGIMETRY_KAFKA_* for SASL/TLS, topic names), so
one environment configures the worker and every tool; --broker overrides the broker for one call.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from regimetry.console import console, fail


def _settings(broker: str | None):
    from connect.settings import SettingsError, load_connection_settings

    try:
        return load_connection_settings(None, **({"broker_url": broker} if broker else {}))
    except SettingsError as exc:
        fail(str(exc))


BROKER = typer.Option(None, "--broker", help="Kafka bootstrap (default REGIMETRY_BROKER_URL).")


def replay_cmd(
    csv: list[Path] = typer.Option([], "--csv", help="Bars file (CSV/parquet); repeat for several symbols."),
    sample: list[str] = typer.Option([], "--sample", help="A named sample instead of a file: eurusd, synthetic."),
    symbol: list[str] = typer.Option([], "--symbol", help="Symbol per source, in order (default: from the source)."),
    speed: str | None = typer.Option(None, help="Bar-time speed-up, e.g. 60x (hourly bars -> one a minute)."),
    rate: str | None = typer.Option(None, help="Fixed rate instead, e.g. 200/s."),
    max_bars: int | None = typer.Option(None, "--max", help="First N bars of each source."),
    topic: str | None = typer.Option(None, help="Target topic (default REGIMETRY_BARS_TOPIC)."),
    broker: str | None = BROKER,
) -> None:
    """Replay historical bars into the bars topic, paced like a live feed; symbols are interleaved by time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ops.kafka import producer
    from ops.replay import Pace, PaceError, load_series, replay
    from regimetry.data import BarDataError

    sources = [str(p) for p in csv] + list(sample)
    if not sources:
        fail("give --csv FILE or --sample eurusd")
    try:
        pace = Pace.parse(speed, rate)
        series = load_series(sources, list(symbol), max_bars)
    except (PaceError, BarDataError, ValueError) as exc:
        fail(str(exc))
    s = _settings(broker)
    topic = topic or s.bars_topic
    total = sum(len(x) for x in series)
    prod = producer(s)
    console.print(f"replaying {total} bars of {', '.join(x.symbol for x in series)} to {topic} ({pace.describe()})")
    progress = Progress(
        TextColumn("[bold]replay"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    try:
        with progress:
            task = progress.add_task("", total=total, rate="")

            def sent(n: int) -> None:
                if n % 50 == 0 or n == total:
                    elapsed = progress.tasks[0].elapsed or 0.0
                    progress.update(task, completed=n, rate=f"{n / elapsed:,.0f} bars/s" if elapsed else "")

            stats = replay(series, lambda sym, msg: prod.send(topic, key=sym.encode(), value=msg), pace, sent)
            prod.flush()
    except KeyboardInterrupt:
        prod.flush()
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
    finally:
        prod.close()
    console.print(
        f"sent {stats.sent} bars in {stats.seconds:.1f} s: "
        + ", ".join(f"{k} {v}" for k, v in stats.per_symbol.items())
    )


def tail_cmd(
    symbol: list[str] = typer.Option([], "--symbol", help="Only these symbols (repeatable)."),
    transitions_only: bool = typer.Option(
        False,
        "--transitions-only",
        help="Only regime changes: read the transitions topic (REGIMETRY_TRANSITIONS_TOPIC, one record per change).",
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON lines (the raw events) instead of a table."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the earliest event, not the next."),
    group: str | None = typer.Option(None, help="Join this consumer group and commit (like a strategy)."),
    max_events: int | None = typer.Option(None, "--max", help="Exit after N events."),
    idle_timeout: float | None = typer.Option(None, "--idle-timeout", help="Exit after N seconds without events."),
    no_dedupe: bool = typer.Option(False, "--no-dedupe", help="Show redelivered events again."),
    topic: str | None = typer.Option(
        None, help="Topic (default REGIMETRY_EVENTS_TOPIC; with --transitions-only REGIMETRY_TRANSITIONS_TOPIC)."
    ),
    broker: str | None = BROKER,
) -> None:
    """Follow regime events (or, --transitions-only, regime transitions) as a strategy would: a table or JSON
    lines on stdout."""
    from rich.console import Console

    from ops.events_view import (
        HEADER,
        TRANSITION_HEADER,
        alarm_line,
        is_alarm,
        is_transition,
        line,
        transition_line,
    )
    from ops.kafka import assign_all, consumer
    from ops.tail import TailOptions, follow, json_line, kafka_poller

    s = _settings(broker)
    out = Console(highlight=False, soft_wrap=True)
    opts = TailOptions(frozenset(symbol), transitions_only, not no_dedupe, max_events, idle_timeout)
    topic = topic or (s.transitions_topic if transitions_only else s.events_topic)
    cons = consumer(s, topic if group else None, from_beginning, group)
    if group is None:
        try:
            n = len(assign_all(cons, topic, from_beginning))
        except LookupError as exc:
            cons.close()
            fail(str(exc))
        console.print(
            f"following {topic} ({n} partitions) from the {'beginning' if from_beginning else 'end'}; Ctrl-C to stop"
        )
    if as_json:

        def show(e: dict) -> None:
            sys.stdout.write(json_line(e) + "\n")
            sys.stdout.flush()
    else:
        out.print(TRANSITION_HEADER if topic == s.transitions_topic else HEADER, style="bold")

        def show(e: dict) -> None:
            out.print(transition_line(e) if is_transition(e) else alarm_line(e) if is_alarm(e) else line(e))

    try:
        follow(kafka_poller(cons), show, opts)
    except KeyboardInterrupt:
        pass
    finally:
        cons.close()


def report_cmd(
    since: str | None = typer.Option(None, help="First bar time (ISO 8601 UTC or epoch seconds), inclusive."),
    until: str | None = typer.Option(None, help="Last bar time, exclusive."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Write the events as CSV here."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the full events as a JSON array here."),
    symbol: list[str] = typer.Option([], "--symbol", help="Only these symbols (repeatable)."),
    idle: float = typer.Option(2.0, help="Seconds without new records that end the read."),
    timeout: float = typer.Option(300.0, help="Give up reading after this many seconds."),
    topic: str | None = typer.Option(None, help="Events topic (default REGIMETRY_EVENTS_TOPIC)."),
    broker: str | None = BROKER,
) -> None:
    """Write the regime events of a bar-time range (de-duplicated) to CSV and/or JSON; CSV to stdout if neither."""
    from ops.event_report import parse_time, read_all, select, to_csv, write
    from ops.kafka import consumer

    try:
        t0, t1 = parse_time(since), parse_time(until)
    except ValueError as exc:
        fail(f"--since/--until: {exc}")
    s = _settings(broker)
    cons = consumer(s, None, True)
    try:
        values = read_all(cons, topic or s.events_topic, idle=idle, timeout=timeout)
    except (LookupError, TimeoutError) as exc:
        fail(str(exc))
    finally:
        cons.close()
    events = select(values, t0, t1, frozenset(symbol))
    if csv_path is None and json_path is None:
        sys.stdout.write(to_csv(events))
    write(events, csv_path, json_path)
    console.print(
        f"{len(events)} events ({len(values)} records read) " + " ".join(str(p) for p in (csv_path, json_path) if p)
    )


def topics_cmd(
    bars_partitions: int = typer.Option(6, envvar="REGIMETRY_BARS_PARTITIONS", help="Partitions of the bars topic."),
    events_partitions: int = typer.Option(
        6,
        envvar="REGIMETRY_EVENTS_PARTITIONS",
        help="Partitions of regime-events (and of regime-drift, regime-transitions).",
    ),
    dlq_partitions: int = typer.Option(1, envvar="REGIMETRY_DLQ_PARTITIONS", help="Partitions of bars-dlq."),
    replication: int = typer.Option(1, envvar="REGIMETRY_REPLICATION_FACTOR", help="Replication factor."),
    timeout: float = typer.Option(120.0, help="Wait this long for the broker."),
    broker: str | None = BROKER,
) -> None:
    """Create the bars, regime-events, regime-drift, regime-transitions and bars-dlq topics if missing
    (idempotent; run before the worker)."""
    from ops.topics import ensure_topics, plan

    s = _settings(broker)
    found = ensure_topics(s, plan(s, bars_partitions, events_partitions, dlq_partitions), replication, timeout)
    for name, n in found.items():
        console.print(f"topic {name}: {n} partitions")


def demo_cmd(
    bars: int = typer.Option(5000, help="Bars of the EURUSD sample to replay."),
    bundle: str = typer.Option("exported_models", help="Bundle folder or models root with CURRENT."),
    rate: float | None = typer.Option(None, help="Bars per second (default: as fast as the worker goes)."),
    show: str = typer.Option("transitions", help="Events to print: all, transitions, none."),
    bad_bars: bool = typer.Option(True, "--bad-bars/--no-bad-bars", help="Also send 3 bad messages (DLQ)."),
    summary_json: Path | None = typer.Option(None, help="Also write the summary here as JSON."),
    workdir: Path | None = typer.Option(None, help="Keep logs here (default: a temporary folder)."),
    timeout: float | None = typer.Option(None, help="Seconds to wait for all events."),
) -> None:
    """Embedded Kafka (Tansu) + Redis + worker, replay the EURUSD sample, show events and a summary; then stop."""
    from rich.console import Console

    from devstack.stack import StackError
    from ops.demo import DemoOptions, run_demo
    from ops.render import print_summary
    from regimetry.bundle import BundleError
    from regimetry.data import BarDataError

    if show not in ("all", "transitions", "none"):
        fail("--show must be all, transitions or none")
    out = Console(highlight=False)
    if not out.is_terminal:
        out.width = 100
    opts = DemoOptions(bars=bars, bundle=bundle, rate=rate, show=show, timeout=timeout, workdir=workdir)
    try:
        summary = run_demo(opts, console.print, console)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except (BundleError, BarDataError, StackError, TimeoutError) as exc:
        fail(str(exc), 1)
    print_summary(out, summary)
    if summary_json:
        summary_json.write_text(json.dumps(summary, indent=1) + "\n")
    if summary["events"] != summary["expected_events"]:
        fail(f"{summary['events']} events, expected {summary['expected_events']}", 1)


def drift_report_cmd(
    bundle: Path = typer.Option(Path("exported_models"), help="Bundle folder or models root with CURRENT."),
    events: str = typer.Option(
        ..., help="Regime events: a file (JSON array or JSON lines) or, if no such file, a Kafka topic."
    ),
    out: Path = typer.Option(Path("drift-report"), "--out", help="Folder for the report files."),
    window: int = typer.Option(500, help="Events in the rolling PSI / Jensen-Shannon window."),
    timeout: float = typer.Option(300.0, help="Give up reading a topic after this many seconds."),
    broker: str | None = BROKER,
) -> None:
    """Drift log (JSONL), anomaly report (markdown + PNGs) and transition deviation summary of regime events,
    with the bundle's calibrated drift alarms."""
    from ops.drift_report import read_events, write_report
    from regimetry.bundle import BundleError, verify_bundle

    try:
        manifest = verify_bundle(bundle)
    except BundleError as exc:
        fail(str(exc))
    settings = None if Path(events).exists() else _settings(broker)
    try:
        evs = read_events(events, settings, timeout)
    except (OSError, ValueError, LookupError, TimeoutError) as exc:
        fail(f"--events {events}: {exc}")
    if not evs:
        fail(f"--events {events}: no events")
    files = write_report(evs, manifest, out, window)
    for note in files.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(
        f"{len(evs)} events, {files.n_alarms} alarms: {files.report} (drift log {files.drift_log.name}, "
        f"{files.transitions.name}, {len(files.figures)} figures)"
    )


def register(app: typer.Typer) -> None:
    app.command("replay")(replay_cmd)
    app.command("tail")(tail_cmd)
    app.command("report-events")(report_cmd)
    app.command("topics")(topics_cmd)
    app.command("demo")(demo_cmd)
    app.command("drift-report")(drift_report_cmd)
