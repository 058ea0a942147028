"""Descriptive regime names from the training profiles of a bundle ("calm", "turbulent up", ...).

Names are labels for people (tail, demo, report, dashboards); the regime id stays the contract. They are a
pure function of the manifest's ``regime_profiles``, so a bundle written before names existed gets the same
names at load as the trainer would have written (when its profiles carry ``n_bars``; see below).

The rule (``regime_names``):

1. **Base name by volatility rank.** Regimes with training bars (``n_bars`` > 0, or ``share`` > 0 when
   ``n_bars`` is absent) are ranked by their profile ``window_volatility`` (the mean over their training
   windows of each window's own return volatility: the key the trainer numbers the ids by, so names follow
   the ids of a freshly trained bundle), or by ``volatility`` (the standard deviation of the one-bar log
   returns of their training bars) in profiles without it, calmest first, ties broken by id. With M ranked
regimes the names are

   - M = 1: normal
   - M = 2: calm, turbulent
   - M = 3: calm, normal, turbulent
   - M = 4: calm, normal, turbulent, crisis
   - M >= 5: calm, quiet, normal, turbulent, crisis, with the middle "normal" repeated M - 4 times and
     numbered calmest first when there is more than one ("normal 1", "normal 2", ...): M = 6 gives calm, quiet,
     normal 1, normal 2, turbulent, crisis.

   A regime with no training bars is named "unseen".
2. **Drift suffix.** " up" / " down" (the sign of ``mean_return``) is appended only where the mean one-bar log
   return is significantly different from 0: ``|mean_return| > 2 * volatility / sqrt(n_bars)`` (a t statistic
   above 2, bars taken as independent) with ``n_bars`` >= 2. A profile without ``n_bars`` (bundles exported
   before it was recorded) gets no suffix: its significance cannot be judged. The test is in-sample and
   descriptive: regimes are partly defined by trend features, so a drifting regime is expected to drift on its
   own training bars; it says which way, not that the drift will persist.
3. **Unique within a bundle.** A name that two regimes would share (only "unseen" can, or names edited into a
   manifest by hand) gets the regime id appended: "unseen 2", "unseen 3".

The trainer numbers the ids by the window volatility of the decoded (served) training labels and the names
rank by the same key, so on a freshly trained bundle "calm" is regime 0; a warm-started refit keeps its
predecessor's ids (the manifest's warm_start says whether they are still ordered), and then the two can differ.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

T_THRESHOLD = 2.0  # |mean| / (vol / sqrt(n)) beyond this earns the " up"/" down" suffix
UNSEEN = "unseen"


def volatility_ladder(m: int) -> list[str]:
    """Base names of m ranked regimes, calmest first (rule 1 of the module docstring)."""
    if m <= 0:
        return []
    fixed = {
        1: ["normal"],
        2: ["calm", "turbulent"],
        3: ["calm", "normal", "turbulent"],
        4: ["calm", "normal", "turbulent", "crisis"],
    }
    if m in fixed:
        return fixed[m]
    middle = ["normal"] if m == 5 else [f"normal {i}" for i in range(1, m - 3)]
    return ["calm", "quiet", *middle, "turbulent", "crisis"]


def drift_suffix(mean_return: float, volatility: float, n_bars: int | None) -> str:
    """ " up" / " down" where |mean| / (vol / sqrt(n)) > 2 (n >= 2), else "" (rule 2)."""
    if n_bars is None or n_bars < 2 or not math.isfinite(mean_return) or mean_return == 0.0:
        return ""
    se = max(float(volatility), 0.0) / math.sqrt(n_bars)
    if abs(mean_return) > T_THRESHOLD * se:
        return " up" if mean_return > 0 else " down"
    return ""


def _seen(p: dict) -> bool:
    n = p.get("n_bars")
    return (n > 0) if n is not None else float(p.get("share", 0.0)) > 0.0


def make_unique(names: Sequence[str], ids: Sequence[int]) -> list[str]:
    """Append the id to every name that occurs more than once (rule 3), until all differ."""
    ids = list(ids)
    out = list(names)
    for _ in range(len(out)):
        dup = {n for n in out if out.count(n) > 1}
        if not dup:
            break
        out = [f"{n} {i}" if n in dup else n for n, i in zip(out, ids)]
    return out


def regime_names(profiles: Iterable[dict]) -> list[str]:
    """Names of the regimes of manifest-style profiles, in id order (the rule is the module docstring).

    Each profile needs ``id``, ``volatility`` and ``mean_return``; ``n_bars`` (else ``share``) tells seen from
    unseen regimes, and ``n_bars`` is needed for the drift suffix."""
    ordered = sorted(profiles, key=lambda p: int(p["id"]))
    seen = [p for p in ordered if _seen(p)]
    key = "window_volatility" if all(p.get("window_volatility") is not None for p in seen) else "volatility"
    ranked = sorted(seen, key=lambda p: (float(p[key]), int(p["id"])))
    base = dict(zip((int(p["id"]) for p in ranked), volatility_ladder(len(ranked))))
    names = []
    for p in ordered:
        i = int(p["id"])
        if i not in base:
            names.append(UNSEEN)
            continue
        n = p.get("n_bars")
        names.append(
            base[i] + drift_suffix(float(p["mean_return"]), float(p["volatility"]), None if n is None else int(n))
        )
    return make_unique(names, [int(p["id"]) for p in ordered])


def manifest_names(manifest: dict) -> tuple[str, ...]:
    """The names of a bundle's regimes indexed by id (0..n_clusters-1): the manifest's
    ``regime_profiles[*].name`` when every regime has one, else computed from the profiles by regime_names
    (older bundles). A regime missing from the profiles is named "regime <id>"."""
    k = int(manifest["n_clusters"])
    profiles = [p for p in manifest.get("regime_profiles") or [] if 0 <= int(p["id"]) < k]
    by_id = {int(p["id"]): p for p in profiles}
    stored = [by_id.get(i, {}).get("name") for i in range(k)]
    if all(isinstance(n, str) and n for n in stored):
        return tuple(make_unique(stored, range(k)))
    computed = dict(zip(sorted(by_id), regime_names(profiles))) if profiles else {}
    return tuple(make_unique([computed.get(i, f"regime {i}") for i in range(k)], range(k)))


def label(regime: int, names: Sequence[str] | None) -> str:
    """ "<id> <name>" for figures and tables ("regime <id>" without names)."""
    if names is None or not 0 <= regime < len(names):
        return f"regime {regime}"
    return f"{regime} {names[regime]}"
