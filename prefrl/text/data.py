"""Text preference and SFT files (JSON lines) and preference stores, read into the core's types.

Preference lines, any mix of:

=========  ===========================================================================
TRL        ``{"prompt": str, "chosen": str, "rejected": str}`` (``prompt`` may be omitted)
Vertex     ``{"input_text": str, "candidate_0": str, "candidate_1": str, "choice": 0 | 1}``
K-wise     ``{"prompt": str, "completions": [str, ...], "ranking": [int, ...]}``, ranking =
           indices into ``completions``, best first
=========  ===========================================================================

Each distinct (prompt, completion) becomes one one-step clip; pairs become
``Comparisons`` (label 1.0: left preferred) and a K-wise ranking becomes its C(K,2)
pairs, each weighted 1/C(K,2) (``Comparisons.from_rankings``, Ouyang et al. 2022).
An optional ``"label"`` (P(chosen preferred) in [0, 1], or null for a skip) on TRL
lines keeps soft labels from noisy oracles.

A directory holding a preference store (``prefs.sqlite``, e.g. the output directory of
``prefrl text label``) is read as the TRL lines of its text judgments, in judgment order
(``prefrl.core.store.trl_record``): the same dataset as the JSONL exported from it.

SFT lines: ``{"prompt": str, "completion": str}`` (or ``{"text": str}``, prompt "").

Every malformed line raises ``PrefrlError("FILE:LINE: ...")`` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prefrl.core.dataset import jsonl_records, short_repr
from prefrl.core.store import STORE_FILE, PreferenceStore
from prefrl.core.dataset import write_jsonl  # noqa: F401  (text's JSONL writer is the core's)
from prefrl.core.types import Comparisons, PrefrlError

PREF_FORMATS = ("trl", "vertex", "kwise")
STORE_FORMAT = "store"
"""The ``formats`` key counting judgments read from preference stores."""


@dataclass
class TextPreferences:
    """Completions (one-step clips) and judgments over them.

    Attributes:
        prompts: (N,) prompt of each completion.
        completions: (N,) completion texts; clip i is ``prompts[i] + completions[i]``.
        comparisons: judgments over clip indices (weights 1/C(K,2) for expanded rankings).
        formats: count of lines read per format (``trl``, ``vertex``, ``kwise``).
    """

    prompts: list[str] = field(default_factory=list)
    completions: list[str] = field(default_factory=list)
    comparisons: Comparisons = field(default_factory=Comparisons.empty)
    formats: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.completions)

    def pairs(self) -> Iterator[tuple[str, str, str, float, float]]:
        """(prompt, left, right, label, weight) of every labeled comparison (for DPO)."""
        c = self.comparisons.labeled()
        for i, j, lab, w in zip(c.left.tolist(), c.right.tolist(), c.label.tolist(), c.weight.tolist()):
            yield self.prompts[i], self.completions[i], self.completions[j], lab, w


@dataclass
class SFTExample:
    prompt: str
    completion: str


def _lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line; errors (not UTF-8, not JSON, too deep) name file and line."""
    if not path.is_file():
        raise PrefrlError(f"{path}: no such JSONL file")
    for no, obj in jsonl_records(path):
        if not isinstance(obj, dict):
            raise PrefrlError(f"{path}:{no}: expected a JSON object, got {type(obj).__name__}")
        yield no, obj


def _str(obj: dict, key: str, where: str, default: str | None = None) -> str:
    if key not in obj:
        if default is not None:
            return default
        raise PrefrlError(f"{where}: missing field `{key}` (has {', '.join(f'`{k}`' for k in obj) or 'no fields'})")
    v = obj[key]
    if isinstance(v, list):
        raise PrefrlError(
            f"{where}: field `{key}` is a list (conversational format); prefrl text reads plain strings"
        )
    if not isinstance(v, str):
        raise PrefrlError(f"{where}: field `{key}` must be a string, got {type(v).__name__} {short_repr(v)}")
    return v


def detect_format(obj: dict, where: str) -> str:
    """Which preference format a line is in, from its keys."""
    if "chosen" in obj or "rejected" in obj:
        return "trl"
    if "candidate_0" in obj or "candidate_1" in obj or "choice" in obj:
        return "vertex"
    if "completions" in obj or "ranking" in obj:
        return "kwise"
    raise PrefrlError(
        f"{where}: not a preference line: expected `chosen`/`rejected` (TRL), `candidate_0`/`candidate_1`/`choice` "
        f"(Vertex) or `completions`/`ranking` (K-wise); got fields {sorted(obj)}"
    )


class _Builder:
    """Deduplicates (prompt, completion) into clip indices while lines are read."""

    def __init__(self) -> None:
        self.index: dict[tuple[str, str], int] = {}
        self.prompts: list[str] = []
        self.completions: list[str] = []
        self.left: list[int] = []
        self.right: list[int] = []
        self.label: list[float] = []
        self.weight: list[float] = []

    def clip(self, prompt: str, completion: str) -> int:
        key = (prompt, completion)
        if key not in self.index:
            self.index[key] = len(self.completions)
            self.prompts.append(prompt)
            self.completions.append(completion)
        return self.index[key]

    def add(self, i: int, j: int, label: float, weight: float = 1.0) -> None:
        self.left.append(i)
        self.right.append(j)
        self.label.append(label)
        self.weight.append(weight)


def _parse_line(b: _Builder, obj: dict, where: str) -> str:
    fmt = detect_format(obj, where)
    if fmt == "trl":
        prompt = _str(obj, "prompt", where, default="")
        chosen, rejected = _str(obj, "chosen", where), _str(obj, "rejected", where)
        label = obj.get("label", 1.0)
        if label is None:
            label = math.nan
        elif isinstance(label, bool) or not isinstance(label, (int, float)) or not 0.0 <= label <= 1.0:
            raise PrefrlError(f"{where}: field `label` must be a probability in [0, 1] or null, got {short_repr(label)}")
        b.add(b.clip(prompt, chosen), b.clip(prompt, rejected), float(label))
    elif fmt == "vertex":
        prompt = _str(obj, "input_text", where, default="")
        c0, c1 = _str(obj, "candidate_0", where), _str(obj, "candidate_1", where)
        if "choice" not in obj:
            raise PrefrlError(f"{where}: missing field `choice` (0 or 1: the preferred candidate)")
        choice = obj["choice"]
        if isinstance(choice, bool) or choice not in (0, 1):
            raise PrefrlError(f"{where}: field `choice` must be 0 or 1, got {short_repr(choice)}")
        b.add(b.clip(prompt, c0), b.clip(prompt, c1), 1.0 if choice == 0 else 0.0)
    else:
        prompt = _str(obj, "prompt", where, default="")
        comps, ranking = obj.get("completions"), obj.get("ranking")
        if not isinstance(comps, list) or not all(isinstance(c, str) for c in comps):
            raise PrefrlError(f"{where}: field `completions` must be a list of strings, got {short_repr(comps)}")
        if not isinstance(ranking, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in ranking):
            raise PrefrlError(f"{where}: field `ranking` must be a list of indices into `completions`, best first; got {short_repr(ranking)}")
        if len(ranking) < 2 or len(set(ranking)) != len(ranking) or not all(0 <= r < len(comps) for r in ranking):
            raise PrefrlError(
                f"{where}: field `ranking` must hold at least 2 distinct indices in [0, {len(comps) - 1}], got {short_repr(ranking)}"
            )
        ids = [b.clip(prompt, comps[r]) for r in ranking]
        expanded = Comparisons.from_rankings([ids])
        for i, j, w in zip(expanded.left.tolist(), expanded.right.tolist(), expanded.weight.tolist()):
            b.add(i, j, 1.0, w)
    return fmt


def _read_store(b: _Builder, root: Path) -> int:
    """Add the text judgments of the store in ``root`` (as their TRL lines would read); returns how many."""
    if not (root / STORE_FILE).is_file():
        raise PrefrlError(f"{root}: a directory without a preference store ({STORE_FILE}); give JSONL files or a store directory")
    with PreferenceStore(root, create=False, readonly=True) as store:
        texts, comps, _ = store.text_training_data()
    for i, j, lab in zip(comps.left.tolist(), comps.right.tolist(), comps.label.tolist()):
        if not math.isnan(lab) and lab < 0.5:  # chosen first, as in the TRL line (``trl_record``)
            i, j, lab = j, i, 1.0 - lab
        b.add(b.clip(*texts[i]), b.clip(*texts[j]), lab)
    return len(comps)


def read_preferences(paths: Path | str | list[Path] | list[str]) -> TextPreferences:
    """Read preference JSONL files (formats may be mixed) and store directories into one dataset.

    Raises:
        PrefrlError: naming file, line and field for the first malformed line.
    """
    paths = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
    b = _Builder()
    formats = {f: 0 for f in (*PREF_FORMATS, STORE_FORMAT)}
    for path in paths:
        if path.is_dir():
            formats[STORE_FORMAT] += _read_store(b, path)
            continue
        for no, obj in _lines(path):
            formats[_parse_line(b, obj, f"{path}:{no}")] += 1
    if not b.label:
        raise PrefrlError(f"{', '.join(map(str, paths))}: no preference lines found")
    comps = Comparisons(np.array(b.left), np.array(b.right), np.array(b.label), np.array(b.weight))
    return TextPreferences(b.prompts, b.completions, comps, {k: v for k, v in formats.items() if v})


def write_preferences_to_store(
    prefs: TextPreferences, store: PreferenceStore, source: str = "import", annotator: str | None = None
) -> list[int]:
    """Add a preference dataset to a store: its texts as text items, its judgments; returns the judgment ids.

    K-wise rankings are refused: a ranking's C(K, 2) pairs are weighted 1/C(K, 2) together and
    a stored judgment carries no weight, so rankings stay in JSONL files.
    """
    c = prefs.comparisons
    if len(c) and (c.weight != 1.0).any():
        raise PrefrlError(
            f"{store.path}: the preferences hold K-wise rankings (pairs weighted 1/C(K,2)); a store holds unweighted "
            "pairwise judgments only, so keep rankings in JSONL files"
        )
    ids = np.array(store.add_texts(prefs.prompts, prefs.completions), dtype=np.int64)
    labels = np.array([float(str(v)) for v in c.label.tolist()] if c.label.dtype == np.float32 else c.label, np.float64)
    return store.add_judgments(np.stack([ids[c.left], ids[c.right]], axis=1), labels, source=source, annotator=annotator)


def read_sft(path: Path | str) -> list[SFTExample]:
    """Read an SFT file: ``{"prompt", "completion"}`` (or ``{"text"}``) per line."""
    path = Path(path)
    out = []
    for no, obj in _lines(path):
        where = f"{path}:{no}"
        if "completion" not in obj and "text" in obj:
            out.append(SFTExample("", _str(obj, "text", where)))
            continue
        out.append(SFTExample(_str(obj, "prompt", where), _str(obj, "completion", where)))
    if not out:
        raise PrefrlError(f"{path}: no SFT examples found")
    return out


def read_prompts(path: Path | str) -> list[str]:
    """Prompts from any JSONL whose lines carry ``prompt`` (or Vertex ``input_text``)."""
    path = Path(path)
    out = []
    for no, obj in _lines(path):
        key = "prompt" if "prompt" in obj or "input_text" not in obj else "input_text"
        out.append(_str(obj, key, f"{path}:{no}"))
    if not out:
        raise PrefrlError(f"{path}: no prompts found")
    return out


