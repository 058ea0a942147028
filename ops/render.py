"""Terminal rendering of the demo summary (rich tables), kept apart from the logic that computes it."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

WIDTH = 56


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def print_summary(console: Console, s: dict) -> None:
    top = Table(
        title=f"regimetry demo: summary ({s['symbol']}, model {s['model_version']})", show_header=False, min_width=WIDTH
    )
    top.add_column(style="bold")
    top.add_column(justify="right")
    agree = s["batch_reference_agreement"]
    rows = [
        ("bars sent (+ bad messages)", f"{s['bars_sent']} (+{s['bad_messages_sent']})"),
        ("regime events (expected)", f"{s['events']} ({s['expected_events']})"),
        ("regime transitions", s["transitions"]),
        ("out-of-distribution events", s["ood_events"]),
        ("live regime == batch reference", f"{agree['equal']} / {agree['of']}"),
        ("events per second (end to end)", f"{s['events_per_second'] or 0:,.0f}"),
        ("mean bar-to-event latency (s)", _fmt(s["mean_end_to_end_latency_seconds"])),
    ]
    for k, v in rows:
        top.add_row(k, str(v))
    console.print(top)

    shares = Table(title="regime shares: live (all events) vs training baseline", min_width=WIDTH)
    shares.add_column("regime", justify="right")
    shares.add_column("name")
    for col in ("live", "baseline"):
        shares.add_column(col, justify="right")
    names = s.get("regime_names") or {}
    for k, live in s["regime_shares"].items():
        shares.add_row(k, names.get(k, ""), f"{live:.3f}", f"{s['baseline_shares'].get(k, 0.0):.3f}")
    whole = s["whole_run"]
    shares.caption = f"live vs baseline over the whole run: PSI {whole['psi']:.4f}, Jensen-Shannon {whole['js']:.4f}"
    console.print(shares)

    drift = Table(
        title=f"drift gauges on the worker's /metrics (last {s['drift_horizon_events']} events)", min_width=WIDTH
    )
    drift.add_column("gauge")
    drift.add_column("value", justify="right")
    for k, v in s["drift"].items():
        drift.add_row(k, _fmt(v))
    console.print(drift)

    dlq = Table(title="dead letters by reason", min_width=WIDTH)
    dlq.add_column("reason")
    dlq.add_column("count", justify="right")
    for k, v in sorted(s["dlq"].items()) or [("(none)", 0)]:
        dlq.add_row(k, str(v))
    console.print(dlq)
