"""Reading regime events as a subscriber does: decode, filter, de-duplicate, and render one line per event.

Shared by `regimetry tail`, `regimetry report-events` and the demo so all three show an event the same way.
De-duplication is on event_id because delivery is at-least-once: a redelivered bar re-emits an event with
the same id, and a strategy must act on it once.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rich.text import Text

REGIME_STYLES = ("green", "yellow", "magenta", "red", "cyan", "blue", "white", "bright_red")


def decode(value: bytes | None) -> dict | None:
    """A regime event, or None for a record that is not a JSON object (a tail must not die on one)."""
    try:
        doc = json.loads(value) if value else None
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) and "event_id" in doc else None


class Seen:
    """Bounded memory of event ids: enough to drop redeliveries, which arrive close to the original."""

    def __init__(self, capacity: int = 100_000):
        self._ids: OrderedDict[str, None] = OrderedDict()
        self.capacity = capacity

    def first_time(self, event_id: str) -> bool:
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True


def is_transition(doc: dict) -> bool:
    """A record of the regime-transitions topic (regimetry/schemas/regime_transition.schema.json)."""
    return "from" in doc and "to" in doc


def wanted(event: dict, symbols: frozenset[str], transitions_only: bool) -> bool:
    """transitions_only keeps transition records, and events whose regime changed (an events topic read with
    --topic)."""
    return (not symbols or event.get("symbol") in symbols) and (
        not transitions_only or is_transition(event) or bool(event.get("regime_changed"))
    )


def iso(epoch: float | int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


NAME_WIDTH = 14  # "turbulent down"; a longer name pushes the rest of its row to the right
HEADER = (
    f"{'bar time (UTC)':<19}  {'symbol':<10} {'regime':>6} {'name':<{NAME_WIDTH}} {'conf':>5} {'bars':>5}  "
    f"{'from':>4}  {'next':>4} {'p':>5}  {'ood':>6}"
)


def line(event: dict) -> Text:
    """One aligned row: bar time, symbol, regime id and name, confidence and bars in it (schema 2; blank for
    version-1 events and events without names), previous regime on a change, forecast, OOD."""
    r, pred = event["regime"], event.get("predicted") or {}
    prev, nxt = event.get("previous_regime"), pred.get("regime")
    dwell = event.get("bars_in_regime")
    style = f"bold {REGIME_STYLES[r['id'] % len(REGIME_STYLES)]}"
    return Text.assemble(
        f"{iso(event['bar_time']):<19}  {event['symbol']:<10} ",
        (f"{r['id']:>6}", style),
        " ",
        (f"{r.get('name') or '':<{NAME_WIDTH}}", style),
        f" {r['confidence']:>5.2f} {'' if dwell is None else dwell:>5}  ",
        (f"{'<- ' + str(prev) if prev is not None else '':>4}", "bold"),
        f"  {'' if nxt is None else nxt:>4}",
        f" {pred['confidence']:>5.2f}" if nxt is not None else f" {'':>5}",
        (f"  {event.get('ood_score', 0.0):>6.2f}", "bold red" if event.get("ood") else ""),
    )


TRANSITION_HEADER = (
    f"{'bar time (UTC)':<19}  {'symbol':<10} {'from':>4} {'name':<{NAME_WIDTH}}    {'to':>4} {'name':<{NAME_WIDTH}} "
    f"{'dwell':>5} {'conf':>5}"
)


def transition_line(t: dict) -> Text:
    """One aligned row of a regime transition: bar time, symbol, from (id, name), to (id, name), bars spent in
    the regime it left, confidence of the new one."""
    a, b = t["from"], t["to"]
    return Text.assemble(
        f"{iso(t['bar_time']):<19}  {t['symbol']:<10} ",
        (f"{a['id']:>4} {a.get('name') or '':<{NAME_WIDTH}}", f"bold {REGIME_STYLES[a['id'] % len(REGIME_STYLES)]}"),
        " -> ",
        (f"{b['id']:>4} {b.get('name') or '':<{NAME_WIDTH}}", f"bold {REGIME_STYLES[b['id'] % len(REGIME_STYLES)]}"),
        f" {'' if t.get('dwell') is None else t['dwell']:>5} {t['confidence']:>5.2f}",
    )


def is_alarm(doc: dict) -> bool:
    """A record of the regime-drift topic (regimetry/schemas/drift_alarm.schema.json)."""
    return "alarm_id" in doc and "detector" in doc


def alarm_line(a: dict) -> Text:
    """One row of a drift alarm: bar time, symbol, detector, the stream's value, statistic over threshold."""
    return Text.assemble(
        f"{iso(a['bar_time']):<19}  {a['symbol']:<10} ",
        (f"{a['detector']:<18}", "bold red"),
        f" value {a['value']:.3f}  CUSUM {a['statistic']:.2f} > {a['threshold']:.2f}",
    )


CSV_COLUMNS = (
    "event_id",
    "symbol",
    "bar_time",
    "bar_time_utc",
    "model_version",
    "regime",
    "regime_name",
    "confidence",
    "regime_changed",
    "previous_regime",
    "bars_in_regime",
    "predicted_regime",
    "predicted_name",
    "predicted_confidence",
    "ood_score",
    "ood",
    "stickiness",
    "mean_duration",
    "emitted_at",
    "schema_version",
)


def flat(event: dict) -> dict[str, Any]:
    """The event as one CSV row (probability vectors stay in the JSON export)."""
    pred = event.get("predicted") or {}
    prof = event.get("profile") or {}
    return {
        "event_id": event["event_id"],
        "symbol": event["symbol"],
        "bar_time": event["bar_time"],
        "bar_time_utc": iso(event["bar_time"]),
        "model_version": event["model_version"],
        "regime": event["regime"]["id"],
        "regime_name": event["regime"].get("name"),
        "confidence": event["regime"]["confidence"],
        "regime_changed": event["regime_changed"],
        "previous_regime": event.get("previous_regime"),
        "bars_in_regime": event.get("bars_in_regime"),
        "predicted_regime": pred.get("regime"),
        "predicted_name": pred.get("name"),
        "predicted_confidence": pred.get("confidence"),
        "ood_score": event.get("ood_score"),
        "ood": event.get("ood"),
        "stickiness": prof.get("stickiness"),
        "mean_duration": prof.get("mean_duration"),
        "emitted_at": event.get("emitted_at"),
        "schema_version": event.get("schema_version"),
    }


def unique(events: Iterable[dict]) -> list[dict]:
    seen = Seen(capacity=10**9)
    return [e for e in events if seen.first_time(e["event_id"])]
