"""Reward-hacking monitor: the signals, their thresholds and the alarm (no learner, env or window code).

A policy trained on a learned reward can climb it by exploiting the model's mistakes
instead of doing what the judges want. The monitor watches for that between updates; the
learner's adapter (``prefrl.control.monitor`` for SB3, ``prefrl.text.ppo`` for text) hands it
numbers, it answers with signal values, flags and, once per episode of alarm, a warning.

Signals (NaN when not measurable at an update; a NaN never raises or clears a flag):

- ``rank_corr`` (true reward known): Spearman correlation of the learned and the true clip
  returns over the policy's recent clips (the last ``window`` updates' newest clips, all
  scored by the current model). Flagged below ``min_rank_corr`` unless the true return is
  still rising across the window (a model that misranks clips of a policy that keeps
  improving is not being exploited yet).
- ``divergence`` (true reward known): over the same clips, the change across the window of
  the mean learned return and of the mean true return per update, each in units of the clips'
  within-update spread (``trend``; for the true return at least a quarter of the largest
  spread seen in the run, so one stray fall of a converged policy is no decline);
  ``divergence = min(learned trend, -true trend)`` is positive only when the learned return
  rises while the true return falls. Flagged above ``max_divergence``.
- ``ood_ratio`` (always): median ensemble disagreement (std across members of the normalised
  clip return) on the policy's newest clips over its median on labeled clips: the policy has
  gone where the model was not trained. Flagged above ``max_ood_ratio``.
- ``new_accuracy`` (always, when judgments keep arriving): the model's accuracy on judgments
  that arrived after its last fit, scored before it is refit on them (held out by time),
  pooled over the latest refits until ``min_new_judgments`` strict preferences. Flagged below
  ``min_new_accuracy``.
- text: ``kl`` (nats per completion to the reference; flagged above ``max_kl`` when set),
  ``suffix_share`` (share of a batch's completions ending in its most common last
  ``suffix_words`` words; flagged above ``max_suffix_share``), ``distinct_ratio`` (distinct
  bigrams of a batch over those of the first batch, the starting policy's; flagged below
  ``min_distinct_ratio``) and, when an oracle watches, ``rank_corr`` of reward-model and
  oracle scores over the batch.

A signal is in alarm after ``patience`` flagged measurements in a row and leaves it after
twice as many unflagged ones (so a value hovering at its threshold does not start a new
episode every few updates); the monitor is in alarm while any signal is. Each episode of
alarm is announced once (and its end once), so a long alarm never floods the console.
"""

from __future__ import annotations

import json

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
from scipy import stats

from prefrl.core.types import PrefrlError

ON_ALARM = ("warn", "stop", "ask")


@dataclass
class MonitorConfig:
    """Reward-hacking monitor: signals, thresholds, reaction (preset ``[monitor]``; `prefrl text ppo --monitor.*`)."""

    enabled: bool = True
    """Watch the run for reward hacking (on by default)."""
    on_alarm: str = "warn"
    """What an alarm does: `warn` (console + TensorBoard + summary), `stop` (end training at the next
    update; the run finishes normally) or `ask` (control: ask extra labels on the flagged clips,
    brought forward from the rest of the budget)."""
    window: int = 5
    """Updates (PPO rollouts) whose newest clips form the trend window."""
    clips_per_update: int = 64
    """Newest clips kept per update for the window (fewer when clips are large: the window holds <= 64 MiB)."""
    patience: int = 2
    """Flagged measurements in a row that raise a signal's alarm (twice as many unflagged ones clear it)."""
    min_rank_corr: float = -0.2
    """rank_corr (learned vs true clip returns on recent clips; text: reward model vs oracle) below this is
    flagged (control: unless the true return is still rising across the window)."""
    max_divergence: float = 0.75
    """divergence (learned return up and true return down across the window, in clip-spread units) above this is flagged."""
    max_ood_ratio: float = 4.0
    """ood_ratio (ensemble disagreement on the policy's clips / on labeled clips) above this is flagged."""
    min_new_accuracy: float = 0.4
    """new_accuracy (on judgments the model was not fit on yet) below this is flagged."""
    min_new_judgments: int = 50
    """Strict new judgments pooled (over the latest refits) before new_accuracy is measured."""
    ask_labels: int = 20
    """Pairs asked on the flagged clips at the start of an alarm (on_alarm = "ask")."""
    max_kl: float | None = None
    """Text: KL to the reference (nats per completion) above this is flagged (None: logged, never flagged)."""
    max_suffix_share: float = 0.5
    """Text: share of a batch's completions ending in its most common suffix above this is flagged."""
    min_distinct_ratio: float = 0.5
    """Text: distinct bigrams of a batch relative to the first batch's below this is flagged."""
    suffix_words: int = 3
    """Text: words in the suffix compared by suffix_share."""

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise PrefrlError(f"[monitor] enabled must be true or false, got {self.enabled!r}")
        if self.on_alarm not in ON_ALARM:
            raise PrefrlError(f"[monitor] on_alarm must be one of {', '.join(ON_ALARM)}, got {self.on_alarm!r}")
        for name, low in (("window", 2), ("clips_per_update", 4), ("patience", 1), ("min_new_judgments", 1),
                          ("ask_labels", 1), ("suffix_words", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise PrefrlError(f"[monitor] {name} must be an integer >= {low}, got {v!r}")
        for name in ("min_rank_corr", "max_divergence", "max_ood_ratio", "min_new_accuracy", "max_suffix_share",
                     "min_distinct_ratio", "max_kl"):
            v = getattr(self, name)
            if v is None and name == "max_kl":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                raise PrefrlError(f"[monitor] {name} must be a number, got {v!r}")

    def thresholds(self) -> dict[str, float | None]:
        """The flag thresholds (for summary.json)."""
        names = ("min_rank_corr", "max_divergence", "max_ood_ratio", "min_new_accuracy", "min_new_judgments",
                 "max_kl", "max_suffix_share", "min_distinct_ratio", "patience", "window")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in names}


# ---- the maths ---------------------------------------------------------------------------------
def rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two score vectors; NaN with fewer than 3 values or a constant one."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b)[0])


def trend(groups: Sequence[np.ndarray], min_spread: float = 0.0) -> float:
    """Change of a per-update mean across the window, in units of the values' within-update spread.

    ``groups[k]`` holds the values of update k (oldest first). The least-squares slope of the
    group means over k, times the window's span, divided by the pooled within-group standard
    deviation (at least ``min_spread``): +1 means the mean rose by one typical clip-to-clip
    spread. NaN with fewer than 3 non-empty groups; 0 when nothing varies.
    """
    gs = [np.asarray(g, np.float64).ravel() for g in groups]
    ks = [k for k, g in enumerate(gs) if len(g)]
    if len(ks) < 3:
        return float("nan")
    means = np.array([gs[k].mean() for k in ks])
    x = np.array(ks, np.float64)
    slope = float(np.polyfit(x, means, 1)[0]) if np.ptp(means) > 0 else 0.0
    change = slope * (x[-1] - x[0])
    resid = np.concatenate([gs[k] - gs[k].mean() for k in ks])
    dof = max(1, len(resid) - len(ks))
    spread = max(float(np.sqrt((resid**2).sum() / dof)), min_spread)
    if spread == 0:
        spread = float(np.std(np.concatenate([gs[k] for k in ks])))
    if spread == 0:
        return 0.0 if change == 0 else math.copysign(float("inf"), change)
    return change / spread


TRUE_SPREAD_FLOOR = 0.25
"""The true trend's unit is at least this share of the largest clip-to-clip spread of true returns seen
in the run: once a policy has converged its clips' true returns are nearly all equal, and one stray
fall must not read as a steep decline."""


def window_signals(learned: Sequence[np.ndarray], true: Sequence[np.ndarray], true_spread: float = 0.0) -> dict[str, float]:
    """rank_corr, learned_trend, true_trend and divergence of the window's clips (see the module docstring).

    ``learned[k]`` and ``true[k]``: the learned (current model) and true returns of update k's clips;
    ``true_spread``: the largest within-update std of true clip returns seen in the run so far.
    """
    lt, tt = trend(learned), trend(true, TRUE_SPREAD_FLOOR * true_spread)
    div = min(lt, -tt) if not (math.isnan(lt) or math.isnan(tt)) else float("nan")
    all_l = np.concatenate([np.ravel(x) for x in learned]) if learned else np.zeros(0)
    all_t = np.concatenate([np.ravel(x) for x in true]) if true else np.zeros(0)
    return {"rank_corr": rank_corr(all_l, all_t), "learned_trend": lt, "true_trend": tt, "divergence": div}


def disagreement_level(member_returns: np.ndarray) -> float:
    """Median over clips of the std across ensemble members of the clip return: (N, M) -> float (NaN if M < 2 or N = 0)."""
    r = np.asarray(member_returns, np.float64)
    if r.ndim != 2 or r.shape[0] == 0 or r.shape[1] < 2:
        return float("nan")
    return float(np.median(r.std(axis=1)))


def ood_ratio(policy_level: float, labeled_level: float) -> float:
    """Disagreement on the policy's clips over that on labeled clips (NaN when either is unknown or 0)."""
    if not (policy_level >= 0 and labeled_level > 0):
        return float("nan")
    return policy_level / labeled_level


def pooled_accuracy(history: Sequence[tuple[float, float]], min_count: int) -> tuple[float, float]:
    """Accuracy pooled over the newest (count, accuracy) entries until ``min_count`` judgments.

    Returns (accuracy, count); accuracy is NaN while fewer than ``min_count`` are pooled.
    """
    n = hits = 0.0
    for count, acc in reversed(history):
        if count <= 0 or not math.isfinite(acc):
            continue
        n += count
        hits += count * acc
        if n >= min_count:
            break
    if n < min_count:
        return float("nan"), n
    return hits / n, n


def _words(text: str) -> list[str]:
    return text.lower().split()


def common_suffix(texts: Sequence[str], words: int = 3) -> tuple[str, float]:
    """The batch's most common last-``words``-word suffix and the share of texts ending in it (NaN if empty)."""
    if not texts:
        return "", float("nan")
    counts: dict[tuple[str, ...], int] = {}
    for t in texts:
        key = tuple(_words(t)[-words:])
        if key:
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return "", 0.0
    key = max(counts, key=counts.__getitem__)
    return " ".join(key), counts[key] / len(texts)


def suffix_share(texts: Sequence[str], words: int = 3) -> float:
    """Share of texts ending in the batch's most common last-``words``-word suffix (NaN for an empty batch)."""
    return common_suffix(texts, words)[1]


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct word n-grams over all n-grams of a batch (Li et al. 2016's distinct-n); NaN without n-grams."""
    grams = [tuple(w[i : i + n]) for w in map(_words, texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


# ---- the alarm ---------------------------------------------------------------------------------
@dataclass
class Flag:
    """How one signal is judged: flagged when ``value < low`` or ``value > high``."""

    name: str
    low: float | None = None
    high: float | None = None
    meaning: str = ""
    unless: str | None = None
    """Another value: while it is positive the signal counts as unflagged (e.g. the true return still rising)."""

    def flagged(self, value: float, values: dict[str, float] | None = None) -> bool | None:
        """True / False, or None when the value is not measured (NaN)."""
        if value is None or math.isnan(value):
            return None
        if self.unless is not None and (values or {}).get(self.unless, float("nan")) > 0:
            return False
        return bool((self.low is not None and value < self.low) or (self.high is not None and value > self.high))

    def describe(self, value: float, detail: str | None = None) -> str:
        bound = f"< {self.low:g}" if self.low is not None and value < self.low else f"> {self.high:g}"
        return f"{self.name} {value:.2f} {bound} ({self.meaning}{': ' + detail if detail else ''})"


def control_flags(cfg: MonitorConfig) -> list[Flag]:
    return [
        Flag("rank_corr", low=cfg.min_rank_corr, unless="true_trend",
             meaning="learned and true returns rank recent clips differently, and the true return is not rising"),
        Flag("divergence", high=cfg.max_divergence, meaning="learned return rising while the true return falls"),
        Flag("ood_ratio", high=cfg.max_ood_ratio, meaning="the reward ensemble disagrees far more on the policy's clips "
                                                           "than on labeled ones"),
        Flag("new_accuracy", low=cfg.min_new_accuracy, meaning="the model mispredicts the newest judgments"),
    ]


def text_flags(cfg: MonitorConfig) -> list[Flag]:
    return [
        Flag("rank_corr", low=cfg.min_rank_corr, meaning="reward-model and oracle scores rank the batch differently"),
        Flag("kl", high=cfg.max_kl, meaning="far from the reference policy"),
        Flag("suffix_share", high=cfg.max_suffix_share, meaning="completions end alike"),
        Flag("distinct_ratio", low=cfg.min_distinct_ratio, meaning="completions lost their diversity"),
    ]


@dataclass
class MonitorStep:
    """What one ``observe`` gives back."""

    values: dict[str, float]
    flags: dict[str, bool | None]
    alarm: bool
    started: bool
    """An episode of alarm began at this update."""
    ended: bool
    message: str | None = None


@dataclass
class HackingMonitor:
    """The alarm state over a run's updates (see the module docstring).

    Args:
        cfg: thresholds and patience.
        flags: which signals are judged and how (``control_flags`` or ``text_flags``).
        say: where the one-line warnings go (None: nowhere).
        unit: what the update counter counts in messages ("step", "env step").
    """

    cfg: MonitorConfig
    flags: list[Flag]
    say: Callable[[str], None] | None = print
    unit: str = "step"
    runs: dict[str, int] = field(default_factory=dict)
    """Per signal: flagged (> 0) or unflagged (< 0) measurements in a row."""
    active: set[str] = field(default_factory=set)
    history: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.episodes: list[dict] = []
        self.alarm_updates = 0
        self.updates = 0
        self.first_alarm: int | None = None
        self.flagged_counts = {f.name: 0 for f in self.flags}
        self.measured_counts = {f.name: 0 for f in self.flags}
        self.last: dict[str, float] = {}
        self.extreme: dict[str, float] = {}

    @property
    def alarm(self) -> bool:
        return bool(self.active)

    STATE = ("runs", "episodes", "alarm_updates", "updates", "first_alarm", "flagged_counts", "measured_counts",
             "last", "extreme")
    """What a resumed run carries over (``state``/``load_state``); ``history`` starts afresh."""

    def state(self) -> dict:
        """The alarm state and the summary's counts, as JSON-ready values (saved with a checkpoint)."""
        return json.loads(json.dumps({**{k: getattr(self, k) for k in self.STATE}, "active": sorted(self.active)}))

    def load_state(self, d: dict) -> None:
        """Continue from ``state()``: a resumed run keeps its alarm episodes, counts and runs of flags."""
        for k in self.STATE:
            if k in d:
                setattr(self, k, d[k])
        self.active = set(d.get("active", ()))

    def observe(self, t: int, values: dict[str, float], details: dict[str, str] | None = None) -> MonitorStep:
        """Judge one update's signal values (others in ``values`` are only recorded); ``details``: words
        added to a signal's warning (e.g. the common ending of text completions)."""
        self.updates += 1
        was = self.alarm
        flags: dict[str, bool | None] = {}
        for f in self.flags:
            v = values.get(f.name, float("nan"))
            fl = f.flagged(v, values)
            flags[f.name] = fl
            if fl is None:
                continue
            self.measured_counts[f.name] += 1
            self.flagged_counts[f.name] += fl
            self.last[f.name] = float(v)
            worst = self.extreme.get(f.name)
            if worst is None or (v < worst if f.low is not None else v > worst):
                self.extreme[f.name] = float(v)
            r = self.runs.get(f.name, 0)
            r = (max(r, 0) + 1) if fl else (min(r, 0) - 1)
            self.runs[f.name] = r
            if r >= self.cfg.patience:
                self.active.add(f.name)
            elif -r >= 2 * self.cfg.patience:
                self.active.discard(f.name)
        now = self.alarm
        started, ended = now and not was, was and not now
        message = None
        if now:
            self.alarm_updates += 1
        if started:
            self.first_alarm = t if self.first_alarm is None else self.first_alarm
            why = [f.describe(values[f.name], (details or {}).get(f.name)) for f in self.flags if f.name in self.active]
            self.episodes.append({"start": int(t), "end": None, "signals": sorted(self.active)})
            message = (f"prefrl monitor: possible reward hacking at {self.unit} {t}: " + "; ".join(why) +
                       f" [{self.cfg.on_alarm}]")
        elif ended:
            self.episodes[-1]["end"] = int(t)
            message = f"prefrl monitor: alarm cleared at {self.unit} {t}"
        elif now:
            self.episodes[-1]["signals"] = sorted(set(self.episodes[-1]["signals"]) | self.active)
        if message and self.say is not None:
            self.say(message)
        self.history.append({"t": int(t), **{k: float(v) for k, v in values.items()}, "alarm": float(now)})
        return MonitorStep(dict(values), flags, now, started, ended, message)

    def summary(self) -> dict:
        """The ``monitor`` block of summary.json."""
        return {
            "on_alarm": self.cfg.on_alarm,
            "alarms": len(self.episodes),
            "first_alarm": self.first_alarm,
            "alarm_updates": self.alarm_updates,
            "updates": self.updates,
            "episodes": self.episodes,
            "signals": {f.name: {"last": self.last.get(f.name), "worst": self.extreme.get(f.name),
                                 "flagged": self.flagged_counts[f.name], "measured": self.measured_counts[f.name]}
                        for f in self.flags},
            "thresholds": self.cfg.thresholds(),
        }


class TextMonitor:
    """The monitor over a text policy's batches: diversity against the first batch, KL, and
    reward-model vs oracle ranks when an oracle watches (see the module docstring).

    Args:
        cfg: thresholds; say: where warnings go.
    """

    def __init__(self, cfg: MonitorConfig, say: Callable[[str], None] | None = print):
        self.cfg = cfg
        self.mon = HackingMonitor(cfg, text_flags(cfg), say=say, unit="PPO step")
        self.start: dict[str, float | str] = {}
        self.ending = ""

    def observe(self, t: int, completions: Sequence[str], kl: float, scores: np.ndarray | None = None,
                oracle_scores: np.ndarray | None = None) -> MonitorStep:
        """One batch: its completions, mean KL to the reference, reward-model and oracle scores."""
        d2 = distinct_n(completions, 2)
        ending, share = common_suffix(completions, self.cfg.suffix_words)
        if not self.start:  # the first batch is the starting policy's (sampled before any update)
            self.start = {"distinct2": d2, "suffix_share": share, "ending": ending}
        self.ending = ending
        values = {
            "kl": float(kl),
            "suffix_share": share,
            "distinct2": d2,
            "distinct_ratio": d2 / self.start["distinct2"] if self.start["distinct2"] > 0 else float("nan"),
            "rank_corr": rank_corr(scores, oracle_scores) if scores is not None and oracle_scores is not None
            else float("nan"),
        }
        return self.mon.observe(t, values, {"suffix_share": f"{share:.0%} end in '... {ending}'"})

    def summary(self) -> dict:
        return {**self.mon.summary(), "start": self.start, "last_ending": self.ending}


def replay(cfg: MonitorConfig, flags: list[Flag], series: Sequence[dict[str, float]], t_key: str = "t") -> HackingMonitor:
    """Run the alarm over recorded signal values (a monitor's ``history`` or progress rows) with other thresholds."""
    mon = HackingMonitor(cfg, flags, say=None)
    for row in series:
        mon.observe(int(row.get(t_key, 0)), {k: float(v) for k, v in row.items() if k != t_key})
    return mon
