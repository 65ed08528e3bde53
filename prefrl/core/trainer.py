"""Fit a reward ensemble on comparisons (Christiano et al. 2017, section 2.2.3).

- ``validation="oob"`` (the default): every labeled comparison trains; member i trains on a
  Poisson(1) bootstrap of all comparisons, stable as data grows, and validates and
  early-stops on its own out-of-bag ones (1/e of them per member, as Christiano et al. hold
  out 1/e per predictor). An ensemble of one falls back to ``shared``.
- ``validation="shared"``: a fixed fraction (1/e) of comparisons never trains; the split is
  stable as data grows (comparison i is always on the same side); each member trains on its
  own bootstrap sample of the rest.
- Input standardisation (``RewardModelConfig.normalize_inputs``) is set from the labeled
  clips before each fit and frozen in between.
- L2 regularisation whose coefficient adapts so that validation loss stays between
  1.1x and 1.5x training loss (the paper's rule), plus optional dropout in the net.
- Early stopping on validation loss (per member with ``oob``); the best weights are kept.
"""

from __future__ import annotations

import difflib
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from prefrl.core.ensemble import ArrayBatch, RewardEnsemble
from prefrl.core.loss import PreferenceLoss
from prefrl.core.types import Comparisons, PrefrlError


@dataclass
class RewardTrainConfig:
    """How a reward ensemble is fit."""

    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 64
    """Comparisons per minibatch (per member)."""
    epochs: int = 30
    """Maximum passes over the training comparisons per fit."""
    patience: int = 4
    """Stop after this many epochs without a better validation loss."""
    val_fraction: float = 1 / math.e
    """Held-out fraction of comparisons (Christiano et al.: 1/e)."""
    l2: float = 1e-4
    """Initial L2 coefficient (Adam weight decay)."""
    adaptive_l2: bool = True
    """Adapt L2 so val loss stays 1.1-1.5x train loss (Christiano et al.)."""
    noise_eps: float = 0.1
    """Label-noise probability in the Bradley-Terry model (Christiano et al.: 0.1)."""
    bootstrap: bool = True
    """Each member trains on its own bootstrap sample of the training comparisons."""
    split_seed: int = 12345
    """Seed of the train/val split and of the out-of-bag bags (fixed, so they are stable as data grows)."""
    micro_batch: int | None = None
    """Comparisons per forward/backward pass inside a minibatch, their gradients summed into the
    minibatch's (None: the whole minibatch in one pass). Bounds a CNN refit's activation memory
    (16 Atari pairs are 800 frames); batch norm then normalises each pass on its own."""
    val_every: int = 1
    """Validate every this many epochs, and after the last (early stopping counts validations, the
    best weights are chosen among validated epochs). With the 2 epochs of an Atari refit, validating
    after each costs as much as a third of the training; 2 validates once per refit."""
    shift: int = 0
    """Image observations only: shift each training clip by a random (dy, dx) of up to this many
    pixels, the same for all its steps, edges repeated (the random shift of DrQ, Kostrikov et al.
    2020, used for image reward models by SURF, Park et al. 2022): the net cannot tie a judgment to
    exact pixel positions. 0: no augmentation. Validation and RL-time rewards never shift."""
    bag: str = "repeat"
    """How a member trains on its bootstrap sample, where a comparison is drawn 0, 1, 2... times.
    `repeat`: each draw is a comparison of the epoch (an epoch's forward/backward passes: as many as
    comparisons). `weight`: each comparison drawn at least once trains once per epoch, its loss
    weighted by its draws (Oza and Russell's online bagging), in minibatches of ``batch_size`` draws'
    worth, so an epoch takes as many optimiser steps on the same expected gradient with 1 - 1/e
    (63%) of the passes: what costs in a CNN refit. Each step then averages fewer distinct
    comparisons (a noisier gradient): on ``pong-quick`` it matched `repeat` on one run's 300
    judgments and lost 0.11 held-out Spearman on another's, so no preset takes it (README)."""
    validation: str = "oob"
    """`oob`: every labeled comparison trains; each member validates and early-stops on its own
    out-of-bag comparisons (1/e per member, Christiano et al.'s per-predictor hold-out; needs >= 2
    members, else `shared`). `shared`: one held-out split (``val_fraction``) that trains no member."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise PrefrlError(f"`val_fraction` must be in [0, 1), got {self.val_fraction}")
        if self.batch_size < 1 or self.epochs < 1 or self.val_every < 1:
            raise PrefrlError("`batch_size`, `epochs` and `val_every` must be >= 1")
        if self.micro_batch is not None and (isinstance(self.micro_batch, bool) or self.micro_batch < 1):
            raise PrefrlError(f"`micro_batch` must be >= 1 or None, got {self.micro_batch!r}")
        if isinstance(self.shift, bool) or not isinstance(self.shift, int) or self.shift < 0:
            raise PrefrlError(f"`shift` must be a whole number of pixels >= 0, got {self.shift!r}")
        if self.validation not in ("shared", "oob"):
            raise PrefrlError(f"`validation` must be `shared` or `oob`, got `{self.validation}`")
        if self.bag not in BAGS:
            close = difflib.get_close_matches(str(self.bag), BAGS, n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            raise PrefrlError(f"`bag` must be one of {', '.join(BAGS)}, got `{self.bag}`{hint}")


BAGS = ("repeat", "weight")
"""``RewardTrainConfig.bag`` names."""


def epoch_batches(counts: np.ndarray, batch_size: int, bag: str, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch's minibatches over a bootstrap sample: lists of comparison indices.

    ``counts[j]``: how many times comparison j was drawn. `repeat` shuffles the draws (a comparison
    drawn twice is in the epoch twice) and cuts them into ``batch_size``; `weight` shuffles the
    comparisons drawn at least once and cuts them into minibatches of ``batch_size`` draws on
    average, so both take the same number of optimiser steps (the caller weights each comparison's
    loss by ``counts``).
    """
    if bag == "repeat":
        draws = np.repeat(np.arange(len(counts)), counts)
        order = draws[rng.permutation(len(draws))]
        size = batch_size
    else:
        drawn = np.flatnonzero(counts)
        order = drawn[rng.permutation(len(drawn))]
        size = max(1, int(round(batch_size * len(drawn) / max(int(counts.sum()), 1))))
    return [order[s : s + size] for s in range(0, len(order), size)]


def random_shift(obs: torch.Tensor, pad: int, net: torch.nn.Module, rng: np.random.Generator) -> torch.Tensor:
    """(B, T, *frame) image clips, each moved by its own random (dy, dx) in [-pad, pad], edge pixels
    repeated into the uncovered border. The frame layout is the net's (``channels_last``: H, W, C;
    else C, H, W or H, W)."""
    if obs.dim() < 4:
        raise PrefrlError(f"`shift` augments image observations; these are {tuple(obs.shape[2:])} per step")
    last = bool(getattr(net, "channels_last", False))
    h_dim, w_dim = (2, 3) if (last or obs.dim() == 4) else (3, 4)
    h, w = obs.shape[h_dim], obs.shape[w_dim]
    out = torch.empty_like(obs)
    for b, (dy, dx) in enumerate(rng.integers(-pad, pad + 1, (len(obs), 2)).tolist()):
        rows = (torch.arange(h) + dy).clamp_(0, h - 1)
        cols = (torch.arange(w) + dx).clamp_(0, w - 1)
        out[b] = obs[b].index_select(h_dim - 1, rows).index_select(w_dim - 1, cols)
    return out


def val_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """(n,) bool: which comparisons are held out. Stable in n: a prefix never changes side."""
    return np.random.default_rng(seed).random(n) < fraction


class RewardTrainer:
    """Trains a ``RewardEnsemble`` on ``Comparisons`` over clip inputs.

    The trainer never looks inside the inputs: they are arrays with leading (N, T)
    dims (obs/acts for control, token ids for text) that the members read.

    Args:
        ensemble: the model to fit (changed in place).
        cfg: training settings.
        rng: source of bootstrap and minibatch randomness.
        loss: the preference loss (defaults to Bradley-Terry with ``cfg.noise_eps``).
    """

    def __init__(
        self,
        ensemble: RewardEnsemble,
        cfg: RewardTrainConfig | None = None,
        rng: np.random.Generator | None = None,
        loss: PreferenceLoss | None = None,
    ):
        self.ensemble = ensemble
        self.cfg = cfg or RewardTrainConfig()
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.loss = loss or PreferenceLoss(self.cfg.noise_eps)
        self.l2 = self.cfg.l2
        self.optimizers = [
            torch.optim.Adam(m.parameters(), lr=self.cfg.lr, weight_decay=self.l2) for m in ensemble.members
        ]
        self.comparisons_seen = 0

    EVAL_CLIPS = 64
    """Clips per forward pass when scoring comparisons without gradients: inputs may be
    ``StoredClipArray`` columns (read from the store when indexed), so only this many are
    in memory at once, and each distinct clip is scored once."""
    EVAL_BYTES = 24 * 2**20
    """...and at most this many bytes of them (32 Atari clips of 705.6 KB; small clips: EVAL_CLIPS)."""

    def _eval_clips(self, inputs: ArrayBatch) -> int:
        """Clips per no-grad forward pass: ``EVAL_CLIPS``, fewer when they exceed ``EVAL_BYTES``."""
        nbytes = sum(np.asarray(v[:1]).nbytes for v in inputs.values())
        return max(1, min(self.EVAL_CLIPS, self.EVAL_BYTES // max(nbytes, 1)))

    def _prepare(self, inputs: ArrayBatch, comps: Comparisons) -> None:
        """Before a fit: set the input standardisation (if the nets have one) from the labeled clips."""
        if not any(getattr(m, "normalize_inputs", False) for m in self.ensemble.members):
            return  # nothing to set: do not gather the clips (a CNN's inputs can be gigabytes)
        used = np.unique(np.concatenate([comps.left, comps.right]))
        self.ensemble.update_input_normalisation({k: v[used] for k, v in inputs.items()})

    def _pair_returns(self, inputs: ArrayBatch, comps: Comparisons, member: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw clip returns of the left and right clips of ``comps``, no grad, eval mode: (C, M) each,
        or (C,) of one ``member``. Each distinct clip is scored once, ``EVAL_CLIPS`` at a time."""
        used, inv = np.unique(np.concatenate([comps.left, comps.right]), return_inverse=True)
        out, step = [], self._eval_clips(inputs)
        with self.ensemble.evaluating():
            for s in range(0, len(used), step):
                batch = self._batch(inputs, used[s : s + step])
                rets = self.ensemble.clip_returns(batch) if member is None else self.ensemble.member_clip_returns(member, batch)
                out.append(rets.cpu().numpy())
        rets = np.concatenate(out)[inv]
        return rets[: len(comps)], rets[len(comps) :]

    def _member_eval(self, i: int, inputs: ArrayBatch, comps: Comparisons) -> tuple[float, float, float]:
        """(loss, accuracy and mean margin on strict preferences) of member i, no grad, eval mode."""
        rl, rr = self._pair_returns(inputs, comps, member=i)
        loss = float(self.loss(torch.as_tensor(rl), torch.as_tensor(rr), torch.as_tensor(comps.label),
                               torch.as_tensor(comps.weight)))
        diff = rl - rr
        strict = comps.label != 0.5
        sign = np.where(comps.label > 0.5, 1.0, -1.0)
        acc = float(((diff * sign) > 0)[strict].mean()) if strict.any() else float("nan")
        margin = float((diff * sign)[strict].mean()) if strict.any() else float("nan")
        return loss, acc, margin

    def _batch(self, inputs: ArrayBatch, idx: np.ndarray) -> dict[str, torch.Tensor]:
        return self.ensemble.to_tensors({k: v[idx] for k, v in inputs.items()})

    def _member_loss(self, i: int, inputs: ArrayBatch, comps: Comparisons) -> torch.Tensor:
        """Loss of member i on some comparisons: all clips of the minibatch in one forward pass
        (each clip randomly shifted when ``shift``)."""
        both = np.concatenate([comps.left, comps.right])
        batch = self._batch(inputs, both)
        if self.cfg.shift:
            batch["obs"] = random_shift(batch["obs"], self.cfg.shift, self.ensemble.members[i], self.rng)
        rets = self.ensemble.member_clip_returns(i, batch)  # (2B,)
        b = len(comps)
        return self.loss(
            rets[:b],
            rets[b:],
            torch.as_tensor(comps.label, device=rets.device),
            torch.as_tensor(comps.weight, device=rets.device),
        )

    def _member_step(self, i: int, opt: torch.optim.Optimizer, inputs: ArrayBatch, comps: Comparisons) -> float:
        """One optimiser step of member i on a minibatch; returns its loss. With ``micro_batch``, the
        minibatch goes through the net in parts whose losses, weighted by their share of the
        minibatch's weight, sum to the minibatch's loss (and their gradients to its gradient)."""
        opt.zero_grad(set_to_none=True)
        mb = self.cfg.micro_batch
        if mb is None or len(comps) <= mb:
            loss = self._member_loss(i, inputs, comps)
            loss.backward()
            opt.step()
            return loss.item()
        total_w, total = float(comps.weight.sum()), 0.0
        for idx in np.array_split(np.arange(len(comps)), -(-len(comps) // mb)):  # near-equal parts of <= mb
            part = comps[idx]
            loss = self._member_loss(i, inputs, part) * (float(part.weight.sum()) / max(total_w, 1e-12))
            loss.backward()
            total += loss.item()
        opt.step()
        return total

    def evaluate(self, inputs: ArrayBatch, comps: Comparisons) -> dict[str, float]:
        """Loss, accuracy and margin of the ensemble (mean of members' returns) on comparisons.

        Accuracy counts comparisons with a strict preference (label != 0.5) where the
        predicted return difference has the label's sign.
        """
        comps = comps.labeled()
        if len(comps) == 0:
            return {}
        return self.pair_metrics(*self._pair_returns(inputs, comps), comps)

    def pair_metrics(self, left: np.ndarray, right: np.ndarray, comps: Comparisons) -> dict[str, float]:
        """``evaluate``'s figures from the (C, M) raw member returns of the left and right clips of
        labeled ``comps`` (scored elsewhere by the current model)."""
        rl, rr = torch.as_tensor(left), torch.as_tensor(right)  # (B, M)
        label = torch.as_tensor(comps.label)
        loss = float(self.loss(rl, rr, label, torch.as_tensor(comps.weight))) / self.ensemble.n_members
        diff = (rl - rr).mean(dim=1).numpy()
        strict = comps.label != 0.5
        sign = np.where(comps.label > 0.5, 1.0, -1.0)
        acc = float(((diff * sign) > 0)[strict].mean()) if strict.any() else float("nan")
        margin = float((diff * sign)[strict].mean()) if strict.any() else float("nan")
        return {"loss": loss, "accuracy": acc, "margin": margin}

    def fit(self, inputs: ArrayBatch, comparisons: Comparisons, epochs: int | None = None,
            train_mask: np.ndarray | None = None) -> dict[str, float]:
        """Train every member on the comparisons; returns slash-path metrics.

        Args:
            inputs: clip arrays with leading (N, T) dims, indexed by the comparisons.
            comparisons: all judgments so far (skips are dropped here).
            epochs: override ``cfg.epochs``.
            train_mask: (len(comparisons),) bools, the comparisons this fit trains on (a warm-started
                refit's new judgments and a sample of earlier ones: ``[prefs] refit_replay``); the
                others still validate, as they would have. None: all.

        Returns:
            Metrics: reward/train/loss, reward/val/{loss,accuracy,margin}, reward/l2,
            reward/comparisons, reward/comparisons_per_s.
        """
        n_clips = len(next(iter(inputs.values())))
        comps_all = comparisons
        if train_mask is not None:
            train_mask = np.asarray(train_mask, bool)
            if train_mask.shape != (len(comps_all),):
                raise PrefrlError(f"train_mask has shape {train_mask.shape}, the comparisons need ({len(comps_all)},)")
        if self.cfg.validation == "oob" and self.ensemble.n_members > 1:
            return self._fit_oob(inputs, comparisons, n_clips, epochs, train_mask)
        mask = val_mask(len(comps_all), self.cfg.val_fraction, self.cfg.split_seed)
        labeled = ~np.isnan(comps_all.label)
        train = comps_all[mask.__invert__() & labeled & (True if train_mask is None else train_mask)]
        if len(train) == 0 and train_mask is not None:  # the mask kept only held-out ones: train on all
            train = comps_all[mask.__invert__() & labeled]
        val = comps_all[mask & labeled]
        if len(train) == 0:
            if len(val) == 0:
                raise PrefrlError("no labeled comparisons to train on (all are skips, or the dataset is empty)")
            train, val = val, Comparisons.empty()  # too few to hold any out
        used = np.concatenate([train.left, train.right, val.left, val.right])  # held-out ones are indexed too
        bad = used[(used < 0) | (used >= n_clips)]
        if len(bad):
            raise PrefrlError(f"comparison refers to clip {int(bad[0])}, but only {n_clips} clips were given (0..{n_clips - 1})")
        epochs = epochs or self.cfg.epochs
        cfg = self.cfg
        self._prepare(inputs, comps_all[labeled])
        n = len(train)
        boots = [
            self.rng.integers(0, n, n) if cfg.bootstrap and self.ensemble.n_members > 1 else np.arange(n)
            for _ in self.ensemble.members
        ]
        counts = [np.bincount(b, minlength=n) for b in boots] if cfg.bag == "weight" else None
        best_val, best_state, bad_epochs = float("inf"), None, 0
        t0, steps_done = time.perf_counter(), 0
        train_loss = float("nan")
        self.ensemble.train()
        for epoch in range(epochs):
            losses = []
            for i, opt in enumerate(self.optimizers):
                if counts is None:
                    order = boots[i][self.rng.permutation(n)]
                    batches, comps_i = [order[s : s + cfg.batch_size] for s in range(0, n, cfg.batch_size)], train
                else:  # `weight`: the distinct comparisons of the member's bootstrap, weighted by their draws
                    batches = epoch_batches(counts[i], cfg.batch_size, "weight", self.rng)
                    comps_i = train.with_weight_counts(counts[i])
                for idx in batches:
                    losses.append(self._member_step(i, opt, inputs, comps_i[idx]))
                    steps_done += len(idx)
            train_loss = float(np.mean(losses))
            if len(val) == 0 or not self._validates(epoch, epochs):
                continue
            val_loss = self.evaluate(inputs, val)["loss"]
            if cfg.adaptive_l2:
                self._adapt_l2(train_loss, val_loss)
            if val_loss < best_val - 1e-4:
                best_val, bad_epochs = val_loss, 0
                best_state = {k: v.clone() for k, v in self.ensemble.state_dict().items()}
            else:
                bad_epochs += 1
                if bad_epochs >= cfg.patience:
                    break
        if best_state is not None:
            self.ensemble.load_state_dict(best_state)
        self.ensemble.revision += 1  # new weights: what the old ones scored is stale
        elapsed = time.perf_counter() - t0
        self.comparisons_seen = len(comps_all)
        metrics = {
            "reward/train/loss": train_loss,
            "reward/l2": self.l2,
            "reward/comparisons": float(len(comps_all)),
            "reward/labeled": float(labeled.sum()),
            "reward/comparisons_per_s": steps_done / max(elapsed, 1e-9),
        }
        for k, v in self.evaluate(inputs, val if len(val) else train).items():
            metrics[f"reward/{'val' if len(val) else 'train'}/{k}"] = v
        return metrics

    def _fit_oob(self, inputs: ArrayBatch, comps_all: Comparisons, n_clips: int, epochs: int | None,
                 train_mask: np.ndarray | None = None) -> dict[str, float]:
        """``fit`` with per-member out-of-bag validation (``validation = "oob"``)."""
        cfg = self.cfg
        comps = comps_all.labeled()
        trains = None if train_mask is None else train_mask[~np.isnan(comps_all.label)]
        n = len(comps)
        if n == 0:
            raise PrefrlError("no labeled comparisons to train on (all are skips, or the dataset is empty)")
        used = np.concatenate([comps.left, comps.right])
        bad = used[(used < 0) | (used >= n_clips)]
        if len(bad):
            raise PrefrlError(f"comparison refers to clip {int(bad[0])}, but only {n_clips} clips were given (0..{n_clips - 1})")
        self._prepare(inputs, comps)
        epochs = epochs or cfg.epochs
        # Poisson(1) bootstrap counts per (member, comparison): prefix-stable as data grows, so a
        # comparison that trained a member (warm-started) never later validates it.
        bags, oobs, member_comps = [], [], []
        for i in range(self.ensemble.n_members):
            counts = np.random.default_rng([cfg.split_seed, i]).poisson(1.0, size=n)
            oobs.append(np.flatnonzero(counts == 0))  # out of the bag whether or not this fit trains on the rest
            if trains is not None:
                counts = counts * trains
            bags.append(counts)
            member_comps.append(comps.with_weight_counts(counts) if cfg.bag == "weight" else comps)
        m_count = self.ensemble.n_members
        best = [float("inf")] * m_count
        best_state: list[dict | None] = [None] * m_count
        best_eval: list[tuple[float, float, float] | None] = [None] * m_count  # (loss, accuracy, margin) of best_state
        bad_epochs = [0] * m_count
        active = [b.sum() > 0 for b in bags]
        last_train = [float("nan")] * m_count
        t0, steps_done = time.perf_counter(), 0
        self.ensemble.train()
        for epoch in range(epochs):
            if not any(active):
                break
            validate = self._validates(epoch, epochs)
            tr, va = [], []
            for i, opt in enumerate(self.optimizers):
                if not active[i]:
                    continue
                losses = []
                for idx in epoch_batches(bags[i], cfg.batch_size, cfg.bag, self.rng):
                    losses.append(self._member_step(i, opt, inputs, member_comps[i][idx]))
                    steps_done += len(idx)
                last_train[i] = float(np.mean(losses))
                if len(oobs[i]) == 0 or not validate:
                    continue
                ev = self._member_eval(i, inputs, comps[oobs[i]])
                vl = ev[0]
                tr.append(last_train[i])
                va.append(vl)
                if vl < best[i] - 1e-4:
                    best[i], bad_epochs[i], best_eval[i] = vl, 0, ev
                    best_state[i] = {k: v.clone() for k, v in self.ensemble.members[i].state_dict().items()}
                else:
                    bad_epochs[i] += 1
                    if bad_epochs[i] >= cfg.patience:
                        active[i] = False
            self.ensemble.train()
            if cfg.adaptive_l2 and va:
                self._adapt_l2(float(np.mean(tr)), float(np.mean(va)))
        for i, st in enumerate(best_state):
            if st is not None:
                self.ensemble.members[i].load_state_dict(st)
        self.ensemble.revision += 1  # new weights: what the old ones scored is stale
        elapsed = time.perf_counter() - t0
        self.comparisons_seen = len(comps_all)
        metrics = {
            "reward/train/loss": float(np.nanmean(last_train)),
            "reward/l2": self.l2,
            "reward/comparisons": float(len(comps_all)),
            "reward/labeled": float(n),
            "reward/comparisons_per_s": steps_done / max(elapsed, 1e-9),
        }
        # the kept weights were evaluated when they were validated: the same figures, not scored again
        evals = [best_eval[i] if best_state[i] is not None and best_eval[i] is not None
                 else self._member_eval(i, inputs, comps[o]) for i, o in enumerate(oobs) if len(o)]
        if evals:
            metrics["reward/val/loss"] = float(np.mean([e[0] for e in evals]))
            metrics["reward/val/accuracy"] = float(np.nanmean([e[1] for e in evals]))
            metrics["reward/val/margin"] = float(np.nanmean([e[2] for e in evals]))
        return metrics

    def _validates(self, epoch: int, epochs: int) -> bool:
        """Whether epoch ``epoch`` (0-based) of ``epochs`` ends with a validation (``val_every``, and the last)."""
        return (epoch + 1) % self.cfg.val_every == 0 or epoch == epochs - 1

    def _adapt_l2(self, train_loss: float, val_loss: float) -> None:
        ratio = val_loss / max(train_loss, 1e-8)
        if ratio > 1.5:
            self.l2 = min(self.l2 * 1.5, 0.1)
        elif ratio < 1.1:
            self.l2 = max(self.l2 / 1.5, 1e-7)
        for opt in self.optimizers:
            for g in opt.param_groups:
                g["weight_decay"] = self.l2
