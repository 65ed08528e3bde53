"""Core data types: clips and comparisons.

A *clip* is a fixed-length fragment of a rollout: observations, actions, the
environment's true reward (hidden from the agent, used by synthetic oracles and
for logging) and optionally rendered RGB frames for the viewer and videos.

A *comparison* is one judgment about a pair of clips. Its label is a float:
the probability that the left clip is preferred (1.0 left, 0.0 right, 0.5
equal). "Can't tell" is a *skip*: recorded so the pair is not asked again, and
never trained on (Christiano et al. 2017).
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np


class PrefrlError(ValueError):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


@dataclass
class Clips:
    """A batch of N clips of T steps each.

    Attributes:
        obs: (N, T, *obs_shape) observations.
        acts: (N, T, *act_shape) actions (float for continuous, int for discrete).
        true_rew: (N, T) float32 environment reward, or None when unknown.
        frames: (N, T, H, W, 3) uint8 rendered frames, or None.
    """

    obs: np.ndarray
    acts: np.ndarray
    true_rew: np.ndarray | None = None
    frames: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.obs = np.asarray(self.obs)
        self.acts = np.asarray(self.acts)
        if self.obs.ndim < 2:
            raise PrefrlError(f"`obs` must have shape (N, T, ...), got {self.obs.shape}")
        if self.acts.ndim < 2:
            raise PrefrlError(f"`acts` must have shape (N, T, ...), got {self.acts.shape}")
        n, t = self.obs.shape[:2]
        if self.acts.shape[:2] != (n, t):
            raise PrefrlError(
                f"`obs` and `acts` disagree on (N, T): obs {self.obs.shape[:2]} vs acts {self.acts.shape[:2]}"
            )
        if self.true_rew is not None:
            self.true_rew = np.asarray(self.true_rew, dtype=np.float32)
            if self.true_rew.shape != (n, t):
                raise PrefrlError(f"`true_rew` must have shape {(n, t)}, got {self.true_rew.shape}")
        if self.frames is not None:
            self.frames = np.asarray(self.frames)
            if self.frames.ndim != 5 or self.frames.shape[:2] != (n, t) or self.frames.shape[-1] != 3:
                raise PrefrlError(f"`frames` must have shape ({n}, {t}, H, W, 3), got {self.frames.shape}")
            if self.frames.dtype != np.uint8:
                raise PrefrlError(f"`frames` must be uint8, got {self.frames.dtype}")

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @property
    def length(self) -> int:
        """Steps per clip (T)."""
        return int(self.obs.shape[1])

    def __getitem__(self, idx: np.ndarray | slice | list[int]) -> Clips:
        return Clips(
            obs=self.obs[idx],
            acts=self.acts[idx],
            true_rew=None if self.true_rew is None else self.true_rew[idx],
            frames=None if self.frames is None else self.frames[idx],
        )

    def true_returns(self) -> np.ndarray:
        """(N,) float: sum of the true reward over each clip."""
        if self.true_rew is None:
            raise PrefrlError("these clips carry no `true_rew`; a synthetic oracle needs it")
        return self.true_rew.sum(axis=1)

    def model_inputs(self) -> dict[str, np.ndarray]:
        """The arrays a reward model reads (frames and true reward are never shown to it)."""
        return {"obs": self.obs, "acts": self.acts}

    @staticmethod
    def concat(parts: list[Clips]) -> Clips:
        if not parts:
            raise PrefrlError("no clips to concatenate")
        has_rew = all(p.true_rew is not None for p in parts)
        has_frames = all(p.frames is not None for p in parts)
        return Clips(
            obs=np.concatenate([p.obs for p in parts]),
            acts=np.concatenate([p.acts for p in parts]),
            true_rew=np.concatenate([p.true_rew for p in parts]) if has_rew else None,  # type: ignore[misc]
            frames=np.concatenate([p.frames for p in parts]) if has_frames else None,  # type: ignore[misc]
        )

    def save_npz(self, path: str | Path | BinaryIO) -> None:
        """Write the arrays with ``numpy.savez`` (no pickles) to a path or an open binary file."""
        arrays = {"obs": self.obs, "acts": self.acts}
        if self.true_rew is not None:
            arrays["true_rew"] = self.true_rew
        if self.frames is not None:
            arrays["frames"] = self.frames
        np.savez(path, **arrays)

    @staticmethod
    def load_npz(path: str | Path) -> Clips:
        """Load clips from an .npz file (no pickle), with a clear error naming the file.

        Before any array is read, each one's .npy header is checked: plain numbers only (an
        object array, i.e. a pickle, is refused), no more bytes than the archive stores, and
        all of them together within ``max_npz_bytes()`` (a zip bomb is refused unread). Only
        ``obs``, ``acts``, ``true_rew`` and ``frames`` are read.

        Raises:
            PrefrlError: naming the file and what is wrong with it; never another exception.
        """
        path = Path(path)
        if not path.is_file():
            raise PrefrlError(f"{path}: no such clips file")
        try:
            if not zipfile.is_zipfile(path):  # else numpy guesses "pickled data" and suggests allow_pickle
                raise PrefrlError(f"{path}: not an .npz archive (expected arrays `obs`, `acts` saved with numpy.savez)")
            arrays = _read_npz(path)
        except PrefrlError:
            raise
        except MemoryError as e:
            raise PrefrlError(f"{path}: its arrays do not fit in memory") from e
        except Exception as e:  # zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError ...
            raise PrefrlError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from e
        try:
            return Clips(
                obs=arrays["obs"],
                acts=arrays["acts"],
                true_rew=arrays.get("true_rew"),
                frames=arrays.get("frames"),
            )
        except PrefrlError as e:
            raise PrefrlError(f"{path}: {e}") from e


NPZ_ARRAYS = ("obs", "acts", "true_rew", "frames")
"""The arrays a clips file may hold (others are ignored, never read)."""


def max_npz_bytes() -> int:
    """The most bytes a clips file's arrays may take in memory: half of this machine's memory (16 GiB if unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The known arrays of an .npz archive, after checking every header (see ``Clips.load_npz``)."""
    from numpy.lib import format as npy

    with zipfile.ZipFile(path) as zf:
        members = {i.filename[: -len(".npy")]: i for i in zf.infolist() if i.filename.endswith(".npy")}
        for key in ("obs", "acts"):
            if key not in members:
                raise PrefrlError(f"{path}: missing array `{key}` (has {sorted(members)[:10]})")
        want = [k for k in NPZ_ARRAYS if k in members]
        total = 0
        for key in want:
            info = members[key]
            with zf.open(info) as fp:
                version = npy.read_magic(fp)
                if version == (1, 0):
                    shape, _, dtype = npy.read_array_header_1_0(fp)
                elif version == (2, 0):
                    shape, _, dtype = npy.read_array_header_2_0(fp)
                else:
                    raise PrefrlError(f"{path}: array `{key}` has .npy format version {version}, which prefrl does not read")
            if dtype.hasobject:
                raise PrefrlError(
                    f"{path}: array `{key}` holds Python objects (a pickle); prefrl loads plain numeric arrays only"
                )
            if dtype.kind not in "biuf":
                raise PrefrlError(f"{path}: array `{key}` has dtype {dtype}; expected numbers (bool, int or float)")
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > info.file_size:
                raise PrefrlError(
                    f"{path}: array `{key}` is truncated: its header declares shape {shape} {dtype} ({nbytes} bytes), "
                    f"the archive stores {info.file_size} bytes"
                )
            total += nbytes
        limit = max_npz_bytes()
        if total > limit:
            raise PrefrlError(
                f"{path}: its arrays would take {total / 2**30:.1f} GiB in memory, over the {limit / 2**30:.1f} GiB "
                "allowed (half of this machine's memory); refused unread"
            )
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in want}


@dataclass
class TextItems:
    """Items of the text path, the counterpart of ``Clips`` for the labeling engine: one
    completion of a prompt each, the reward model's inputs for it (token ids, leading (N, 1)
    dims: a completion is a one-step clip), and the oracle's score when known (its true return).

    Attributes:
        prompts: (N,) prompts.
        completions: (N,) completions.
        inputs: arrays with leading (N, 1) dims that the reward model reads.
        scores: (N,) oracle scores, or None.
    """

    prompts: list[str]
    completions: list[str]
    inputs: dict[str, np.ndarray]
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if len(self.completions) != n or any(len(v) != n for v in self.inputs.values()):
            raise PrefrlError(f"TextItems: {n} prompts, {len(self.completions)} completions and inputs of "
                              f"{[len(v) for v in self.inputs.values()]} rows must agree")
        if self.scores is not None:
            self.scores = np.asarray(self.scores, np.float32).reshape(n)

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, idx: np.ndarray | slice | list[int]) -> TextItems:
        rows = np.arange(len(self))[idx]
        return TextItems([self.prompts[i] for i in rows], [self.completions[i] for i in rows],
                         {k: v[rows] for k, v in self.inputs.items()},
                         None if self.scores is None else self.scores[rows])

    @property
    def true_rew(self) -> np.ndarray | None:
        """(N, 1) scores as one-step rewards (what scripted teachers compare), or None."""
        return None if self.scores is None else self.scores[:, None]

    def true_returns(self) -> np.ndarray:
        if self.scores is None:
            raise PrefrlError("these text items have no oracle scores")
        return self.scores.astype(np.float64)

    def model_inputs(self) -> dict[str, np.ndarray]:
        return self.inputs


@dataclass
class Comparisons:
    """N judgments over pairs of clips, as parallel arrays.

    Attributes:
        left: (C,) int64 index of the left clip.
        right: (C,) int64 index of the right clip.
        label: (C,) float32 P(left preferred); NaN marks a skip (never trained on).
        weight: (C,) float32 loss weight (1 for plain pairs, 1/C(K,2) for expanded K-wise rankings).
    """

    left: np.ndarray
    right: np.ndarray
    label: np.ndarray
    weight: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.left = np.asarray(self.left, dtype=np.int64).reshape(-1)
        self.right = np.asarray(self.right, dtype=np.int64).reshape(-1)
        self.label = np.asarray(self.label, dtype=np.float32).reshape(-1)
        if self.weight is None:
            self.weight = np.ones_like(self.label)
        self.weight = np.asarray(self.weight, dtype=np.float32).reshape(-1)
        if not (len(self.left) == len(self.right) == len(self.label) == len(self.weight)):
            raise PrefrlError("`left`, `right`, `label` and `weight` must have the same length")
        ok = np.isnan(self.label) | ((self.label >= 0) & (self.label <= 1))
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            raise PrefrlError(f"label {self.label[bad]} at comparison {bad} is not a probability in [0, 1]")

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, idx: np.ndarray | slice) -> Comparisons:
        return Comparisons(self.left[idx], self.right[idx], self.label[idx], self.weight[idx])

    def with_weight_counts(self, counts: np.ndarray) -> Comparisons:
        """The same comparisons, each one's weight multiplied by ``counts`` (e.g. its bootstrap draws)."""
        return Comparisons(self.left, self.right, self.label, self.weight * np.asarray(counts, np.float32))

    def labeled(self) -> Comparisons:
        """Drop skips (NaN labels): what a reward model trains on."""
        return self[~np.isnan(self.label)]

    @staticmethod
    def empty() -> Comparisons:
        return Comparisons(np.zeros(0), np.zeros(0), np.zeros(0))

    @staticmethod
    def from_rankings(rankings: list[list[int]]) -> Comparisons:
        """Expand K-wise rankings (best first) into pairs, each weighted 1/C(K,2).

        This is the InstructGPT expansion (Ouyang et al. 2022): every ranking
        contributes C(K,2) pairs and the same total weight as one pair.
        """
        left, right, weight = [], [], []
        for ranking in rankings:
            k = len(ranking)
            if k < 2:
                raise PrefrlError(f"a ranking needs at least 2 items, got {ranking}")
            w = 1.0 / (k * (k - 1) / 2)
            for a in range(k):
                for b in range(a + 1, k):
                    left.append(ranking[a])
                    right.append(ranking[b])
                    weight.append(w)
        return Comparisons(np.array(left), np.array(right), np.ones(len(left)), np.array(weight))
