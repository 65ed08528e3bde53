"""Reward ensemble, trainer and query selection: they learn, save, and pick informative pairs."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch

from conftest import TINY_NET, TOY_SPEC
from prefrl.core.ensemble import RewardEnsemble
from prefrl.core.nets import InputSpec, RewardModelConfig
from prefrl.core.query import disagreement, random_pairs, select_pairs
from prefrl.core.trainer import RewardTrainConfig, RewardTrainer, epoch_batches, random_shift, val_mask
from prefrl.core.toy import toy_clips, toy_dataset
from prefrl.core.types import Clips, Comparisons, PrefrlError


def held_out_pair_accuracy(model: RewardEnsemble, seed: int, n_clips: int = 500, n_pairs: int = 2000) -> float:
    """Fraction of random pairs of *fresh* toy clips that the model orders like the true reward."""
    clips = toy_clips(n_clips, seed=seed)
    pairs = random_pairs(n_clips, n_pairs, np.random.default_rng(seed))
    true = clips.true_returns()
    pred = model.predict_clip_returns(clips.model_inputs()).mean(axis=1)
    dt = true[pairs[:, 0]] - true[pairs[:, 1]]
    dp = pred[pairs[:, 0]] - pred[pairs[:, 1]]
    strict = dt != 0
    return float((np.sign(dp) == np.sign(dt))[strict].mean())


def test_fit_on_synthetic_comparisons_ranks_held_out_pairs(reward_model: RewardEnsemble) -> None:
    """A few hundred synthetic comparisons are enough to rank unseen clips >= 90% correctly."""
    clips, comps = toy_dataset(200, 400, seed=0)
    before = held_out_pair_accuracy(reward_model, seed=1000)
    metrics = RewardTrainer(reward_model, RewardTrainConfig(), np.random.default_rng(0)).fit(
        clips.model_inputs(), comps
    )
    after = held_out_pair_accuracy(reward_model, seed=1000)
    assert after >= 0.90, f"held-out pair accuracy {after:.3f} (untrained {before:.3f}), metrics {metrics}"
    assert metrics["reward/val/accuracy"] >= 0.85
    assert metrics["reward/train/loss"] < 0.45  # well below log 2 (chance) even with eps=0.1 noise


def test_parameters_change_after_short_fit(reward_model: RewardEnsemble, rng: np.random.Generator) -> None:
    clips, comps = toy_dataset(40, 60, seed=1)
    before = [[p.detach().clone() for p in m.parameters()] for m in reward_model.members]
    RewardTrainer(reward_model, RewardTrainConfig(epochs=1), rng).fit(clips.model_inputs(), comps)
    for i, member in enumerate(reward_model.members):
        for old, new in zip(before[i], member.parameters()):
            assert not torch.equal(old, new), f"member {i}: a parameter tensor did not change"


def test_fit_reports_slash_path_metrics(reward_model: RewardEnsemble, rng: np.random.Generator) -> None:
    clips, comps = toy_dataset(40, 60, seed=2)
    metrics = RewardTrainer(reward_model, RewardTrainConfig(epochs=2), rng).fit(clips.model_inputs(), comps)
    for key in ("reward/train/loss", "reward/val/loss", "reward/val/accuracy", "reward/val/margin", "reward/l2"):
        assert np.isfinite(metrics[key]), key
    assert metrics["reward/comparisons"] == 60
    assert metrics["reward/comparisons_per_s"] > 0


def test_skips_are_never_trained_on(rng: np.random.Generator) -> None:
    clips, comps = toy_dataset(20, 30, seed=3)
    model = RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=1))
    all_skips = Comparisons(comps.left, comps.right, np.full(len(comps), np.nan))
    with pytest.raises(PrefrlError, match="no labeled comparisons"):
        RewardTrainer(model, RewardTrainConfig(epochs=1), rng).fit(clips.model_inputs(), all_skips)
    # A skip pointing at a clip that does not exist is dropped before indexing, not an error.
    with_skip = Comparisons(
        np.append(comps.left, 0), np.append(comps.right, 999), np.append(comps.label, np.nan)
    )
    RewardTrainer(model, RewardTrainConfig(epochs=1), rng).fit(clips.model_inputs(), with_skip)


@pytest.mark.parametrize("held_out", [False, True], ids=["train-side", "val-side"])
def test_out_of_range_clip_index_is_a_clear_error(held_out: bool, rng: np.random.Generator) -> None:
    clips, comps = toy_dataset(20, 30, seed=4)
    mask = val_mask(len(comps), RewardTrainConfig().val_fraction, RewardTrainConfig().split_seed)
    i = int(np.flatnonzero(mask if held_out else ~mask)[0])
    comps.right[i] = 25
    model = RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=1))
    with pytest.raises(PrefrlError, match="clip 25, but only 20 clips"):
        RewardTrainer(model, RewardTrainConfig(epochs=1), rng).fit(clips.model_inputs(), comps)


def test_val_split_is_stable_as_data_grows() -> None:
    small, large = val_mask(100, 1 / np.e, 7), val_mask(1000, 1 / np.e, 7)
    np.testing.assert_array_equal(small, large[:100])
    assert abs(large.mean() - 1 / np.e) < 0.05


def test_adaptive_l2_keeps_val_train_ratio_in_band(rng: np.random.Generator) -> None:
    model = RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=2))
    trainer = RewardTrainer(model, RewardTrainConfig(l2=1e-3), rng)
    trainer._adapt_l2(train_loss=0.1, val_loss=0.3)  # ratio 3 > 1.5: overfitting, more L2
    assert trainer.l2 == pytest.approx(1.5e-3)
    trainer._adapt_l2(train_loss=0.1, val_loss=0.105)  # ratio 1.05 < 1.1: less L2
    assert trainer.l2 == pytest.approx(1e-3)
    trainer._adapt_l2(train_loss=0.1, val_loss=0.13)  # inside 1.1-1.5: unchanged
    assert trainer.l2 == pytest.approx(1e-3)
    assert all(g["weight_decay"] == pytest.approx(1e-3) for o in trainer.optimizers for g in o.param_groups)


def test_normalisation_gives_zero_mean_target_std(reward_model: RewardEnsemble) -> None:
    clips = toy_clips(50, seed=5)
    reward_model.target_std = 0.5
    reward_model.update_normalisation(clips.model_inputs())
    flat_obs = clips.obs.reshape(-1, 4)
    flat_acts = clips.acts.reshape(-1, 2)
    r = reward_model.predict_step(flat_obs, flat_acts)  # (N*T,) member mean
    assert abs(r.mean()) < 1e-4
    if reward_model.n_members == 1:
        assert r.std(ddof=1) == pytest.approx(0.5, rel=1e-3)
    # Clip returns are sums of the same normalised steps.
    rets = reward_model.predict_clip_returns(clips.model_inputs()).mean(axis=1)
    np.testing.assert_allclose(rets, r.reshape(50, -1).sum(axis=1), rtol=1e-4, atol=1e-4)


def test_save_load_round_trip(reward_model: RewardEnsemble, tmp_path) -> None:
    clips = toy_clips(10, seed=6)
    reward_model.update_normalisation(clips.model_inputs())
    path = tmp_path / "model.pt"
    reward_model.save(path, extra={"note": "x"})
    loaded = RewardEnsemble.load(path)
    assert loaded.n_members == reward_model.n_members and loaded.extra == {"note": "x"}
    np.testing.assert_allclose(
        loaded.predict_clip_returns(clips.model_inputs()), reward_model.predict_clip_returns(clips.model_inputs())
    )


def test_load_refuses_corrupt_or_foreign_files(tmp_path) -> None:
    good = tmp_path / "good.pt"
    RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=1)).save(good)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(PrefrlError, match="corrupt.pt: not a readable prefrl reward model"):
        RewardEnsemble.load(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(PrefrlError, match="foreign.pt: not a prefrl reward model"):
        RewardEnsemble.load(foreign)
    with pytest.raises(PrefrlError, match="no such reward model file"):
        RewardEnsemble.load(tmp_path / "missing.pt")
    # Right format, weights of another shape than the config says.
    ckpt = torch.load(good, weights_only=True)
    ckpt["state_dict"] = RewardEnsemble(TOY_SPEC, TINY_NET.__class__(hidden=(8,), members=1)).state_dict()
    torch.save(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(PrefrlError, match="mismatch.pt: reward model does not match its config"):
        RewardEnsemble.load(tmp_path / "mismatch.pt")


def test_check_inputs_names_the_shape_mismatch() -> None:
    model = RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=1))
    clips = toy_clips(3, obs_dim=3, seed=7)
    with pytest.raises(PrefrlError, match=r"x.npz: clips have observation shape \(3,\), the reward model expects \(4,\)"):
        model.check_inputs(clips.model_inputs(), "x.npz")
    discrete = RewardEnsemble(InputSpec(obs_shape=(4,), act_n=3), dataclasses.replace(TINY_NET, members=1))
    obs = np.zeros((2, 5, 4), np.float32)
    discrete.check_inputs({"obs": obs, "acts": np.full((2, 5), 2)}, "ok.npz")
    with pytest.raises(PrefrlError, match=r"y.npz: clips have actions in 0..5, the reward model knows 3 discrete actions"):
        discrete.check_inputs({"obs": obs, "acts": np.arange(10).reshape(2, 5) % 6}, "y.npz")
    with pytest.raises(PrefrlError, match="expects discrete"):
        discrete.check_inputs({"obs": obs, "acts": np.zeros((2, 5), np.float32)}, "z.npz")


def test_disagreement_selection_beats_random_pairs(rng: np.random.Generator) -> None:
    """Pairs chosen by ensemble disagreement have higher member variance of P than random pairs."""
    clips, comps = toy_dataset(200, 40, seed=8)
    model = RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=3))
    RewardTrainer(model, RewardTrainConfig(epochs=5), rng).fit(clips.model_inputs(), comps)
    inputs = clips.model_inputs()
    chosen, scores = select_pairs("disagreement", 20, inputs, rng, ensemble=model, pool_factor=10)
    assert chosen.shape == (20, 2) and (chosen[:, 0] != chosen[:, 1]).all()
    assert (np.diff(scores) <= 0).all()  # best first
    np.testing.assert_allclose(scores, disagreement(model, inputs, chosen), rtol=1e-5)
    baseline = disagreement(model, inputs, random_pairs(len(clips), 500, np.random.default_rng(1)))
    assert scores.mean() > 2 * baseline.mean()
    assert scores.min() > np.median(baseline)


def test_selection_falls_back_to_random_and_respects_exclude(rng: np.random.Generator) -> None:
    clips = toy_clips(6, seed=9)
    single = RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=1))
    pairs, scores = select_pairs("disagreement", 5, clips.model_inputs(), rng, ensemble=single)
    assert len(pairs) == 5 and (scores == 0).all()  # one member: no disagreement to measure
    asked = {(0, 1), (2, 3)}
    pairs, _ = select_pairs("random", 13, clips.model_inputs(), rng, exclude=asked)
    got = {(min(a, b), max(a, b)) for a, b in pairs.tolist()}
    assert len(got) == 13 and not got & asked  # all 15 unordered pairs minus the 2 asked
    with pytest.raises(PrefrlError, match="unknown query selection"):
        select_pairs("entropyy", 5, clips.model_inputs(), rng)


def test_oob_validation_trains_every_member_on_its_own_bag_and_ranks(rng: np.random.Generator) -> None:
    """validation="oob": all labels train, each member early-stops on its own out-of-bag share."""
    clips, comps = toy_dataset(200, 400, seed=0)
    model = RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=3))
    metrics = RewardTrainer(model, RewardTrainConfig(validation="oob"), rng).fit(clips.model_inputs(), comps)
    assert held_out_pair_accuracy(model, seed=1000) >= 0.90
    assert metrics["reward/val/accuracy"] >= 0.85 and metrics["reward/labeled"] == 400
    with pytest.raises(PrefrlError, match="validation"):
        RewardTrainConfig(validation="nope")


def test_input_normalisation_fast_path_matches_and_survives_save(tmp_path, rng: np.random.Generator) -> None:
    """normalize_inputs: stats set at fit from the labeled clips, used by step_fn, saved as buffers
    (also with squared-action features); a checkpoint saved before the option existed still loads."""
    clips, comps = toy_dataset(60, 120, seed=4)
    inputs = {k: v * 50.0 + 3.0 if k == "obs" else v for k, v in clips.model_inputs().items()}
    for squares in (False, True):
        net = RewardModelConfig(hidden=(16,), normalize_inputs=True, action_squares=squares, members=2)
        model = RewardEnsemble(TOY_SPEC, net)
        RewardTrainer(model, RewardTrainConfig(epochs=2, validation="oob"), rng).fit(inputs, comps)
        mean = model.members[0].in_mean.numpy()
        used = np.unique(np.concatenate([comps.left, comps.right]))  # the labeled clips
        assert np.allclose(mean[:4], inputs["obs"][used].reshape(-1, 4).mean(0), atol=1e-3)
        model.update_normalisation(inputs)
        obs, acts = inputs["obs"][:, 0], inputs["acts"][:, 0]
        np.testing.assert_allclose(model.step_fn()(obs, acts), model.predict_step(obs, acts), rtol=1e-4, atol=1e-4)
        model.save(tmp_path / "m.pt")
        again = RewardEnsemble.load(tmp_path / "m.pt")
        np.testing.assert_allclose(again.step_fn()(obs, acts), model.step_fn()(obs, acts), rtol=1e-5, atol=1e-5)
    # an old checkpoint (no normalize_inputs in its config, no in_mean buffers) loads as raw inputs
    import json

    import torch

    old = RewardEnsemble(TOY_SPEC, RewardModelConfig(hidden=(8,), normalize_inputs=False, members=1))
    old.save(tmp_path / "old.pt")
    ck = torch.load(tmp_path / "old.pt", weights_only=True)
    cfg = json.loads(ck["config_json"])
    del cfg["net"]["normalize_inputs"], cfg["net"]["action_squares"]
    ck["config_json"] = json.dumps(cfg)
    torch.save(ck, tmp_path / "old.pt")
    assert not RewardEnsemble.load(tmp_path / "old.pt").members[0].normalize_inputs


def _stacked_store_data(tmp_path, n_clips: int = 16, n_comps: int = 24, seed: int = 0):
    """A store of stacked-frame clips (uint8 (T, 4, 16, 16) stacks, like Atari's) with synthetic
    judgments: a clip's return is its brightness, so a small CNN can learn the preference."""
    from prefrl.core.store import PreferenceStore

    rng = np.random.default_rng(seed)
    level = rng.integers(0, 200, n_clips)
    raw = (rng.integers(0, 50, (n_clips, 9, 16, 16)) + level[:, None, None, None]).astype(np.uint8)
    obs = np.stack([raw[:, t : t + 4] for t in range(6)], axis=1)  # (n, 6, 4, 16, 16)
    clips = Clips(obs, np.zeros((n_clips, 6), np.int64), np.repeat(level[:, None] / 6.0, 6, axis=1).astype(np.float32))
    store = PreferenceStore(tmp_path)
    ids = store.add_clips(clips)
    for a, b in random_pairs(n_clips, n_comps, rng):
        store.add_judgment(ids[a], ids[b], float(level[a] > level[b]), source="synthetic")
    return store


def _cnn_ensemble(seed: int = 0) -> RewardEnsemble:
    torch.manual_seed(seed)
    spec = InputSpec(obs_shape=(4, 16, 16), act_shape=(), act_n=6, obs_dtype="uint8")
    cfg = RewardModelConfig(kind="cnn", hidden=(8,), use_actions=False, dropout=0.0, members=2,
                            options={"kernels": [4, 3], "strides": [2, 1], "channels": [4, 4]})
    return RewardEnsemble(spec, cfg)


def test_a_refit_on_stored_clips_reads_each_clip_file_once_and_equals_a_fit_on_arrays(tmp_path) -> None:
    """A fit on lazy store data (minibatches built from the clip cache, frames channels-last in memory)
    gives the same model as on the same clips in memory, and reads each clip's file at most once
    however many epochs and members index it."""
    store = _stacked_store_data(tmp_path)
    with store:
        lazy, comps, _ = store.training_data(lazy=True)
        eager, _, _ = store.training_data()
        store.set_cache_mib(0)  # empty the cache, then room for every clip
        store.set_cache_mib(16)
        cfg = RewardTrainConfig(epochs=3, batch_size=4, lr=1e-2)
        fits = []
        for inputs in (lazy.model_inputs(), eager.model_inputs()):
            model = _cnn_ensemble()
            loads = store.cache_loads
            metrics = RewardTrainer(model, cfg, np.random.default_rng(0)).fit(inputs, comps)
            fits.append((model, metrics, store.cache_loads - loads))
        (m_lazy, met_lazy, loads_lazy), (m_eager, met_eager, loads_eager) = fits
        assert loads_lazy == len(lazy) and loads_eager == 0  # each judged clip read from disk once
        for (k, a), b in zip(m_lazy.state_dict().items(), m_eager.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
        assert met_lazy["reward/val/loss"] == pytest.approx(met_eager["reward/val/loss"], rel=1e-5)


@pytest.mark.parametrize("val_every", [1, 2])
def test_oob_validation_every_n_epochs_and_the_kept_weights_are_not_scored_again(val_every: int, rng) -> None:
    """``val_every``: out-of-bag validation after every n-th epoch and after the last; the figures of the
    kept (best) weights are those measured when they were validated, equal to scoring them afresh."""
    clips, comps = toy_dataset(60, 120, seed=5)
    model = RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=2))
    trainer = RewardTrainer(model, RewardTrainConfig(epochs=5, patience=10, val_every=val_every), rng)
    calls = []
    scored = trainer._member_eval
    trainer._member_eval = lambda i, inputs, c: calls.append(i) or scored(i, inputs, c)
    metrics = trainer.fit(clips.model_inputs(), comps)
    assert len(calls) == 2 * (5 if val_every == 1 else 3)  # epochs 1-5, or 2, 4 and 5; none after the fit
    fresh = []
    for i in range(2):
        counts = np.random.default_rng([trainer.cfg.split_seed, i]).poisson(1.0, size=len(comps))
        fresh.append(scored(i, clips.model_inputs(), comps[np.flatnonzero(counts == 0)]))
    assert metrics["reward/val/loss"] == pytest.approx(np.mean([f[0] for f in fresh]), rel=1e-6)
    assert metrics["reward/val/accuracy"] == pytest.approx(np.mean([f[1] for f in fresh]), rel=1e-6)
    with pytest.raises(PrefrlError, match="val_every"):
        RewardTrainConfig(val_every=0)


def test_micro_batches_give_the_minibatch_gradient(rng) -> None:
    """``micro_batch``: the minibatch goes through the net in parts; without batch norm the step is the
    whole minibatch's (the parts' losses weighted by their share of the weight sum), to float rounding."""
    clips, comps = toy_dataset(40, 60, seed=6)
    comps = Comparisons(comps.left, comps.right, comps.label, np.linspace(0.5, 2.0, len(comps)))  # unequal weights
    steps = []
    for micro in (None, 7):
        model = RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=1))
        torch.manual_seed(0)
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.3)
        trainer = RewardTrainer(model, RewardTrainConfig(batch_size=20, micro_batch=micro), np.random.default_rng(0))
        sgd = torch.optim.SGD(model.parameters(), lr=0.5)  # a step proportional to the gradient (Adam's first is not)
        loss = trainer._member_step(0, sgd, clips.model_inputs(), comps[np.arange(20)])
        steps.append((loss, [p.detach().clone() for p in model.parameters()]))
    (loss_whole, whole), (loss_parts, parts) = steps
    assert loss_parts == pytest.approx(loss_whole, rel=1e-5)
    for a, b in zip(whole, parts):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(PrefrlError, match="micro_batch"):
        RewardTrainConfig(micro_batch=0)


def test_a_weighted_bag_gives_the_repeated_bags_loss_and_gradient() -> None:
    """``bag = "weight"``: a comparison drawn k times, passed once with its loss weighted by k, gives
    the loss and the gradient of passing it k times (a net without batch norm), to float rounding."""
    clips, comps = toy_dataset(40, 30, seed=7)
    counts = np.random.default_rng(3).poisson(1.0, size=len(comps))
    steps = []
    for bag in ("repeat", "weight"):
        model = RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=1))
        torch.manual_seed(0)
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.3)
        trainer = RewardTrainer(model, RewardTrainConfig(batch_size=len(comps) * 4), np.random.default_rng(0))
        sgd = torch.optim.SGD(model.parameters(), lr=0.5)
        if bag == "repeat":
            batch = comps[np.repeat(np.arange(len(comps)), counts)]
        else:
            batch = comps.with_weight_counts(counts)[np.flatnonzero(counts)]
        loss = trainer._member_step(0, sgd, clips.model_inputs(), batch)
        steps.append((len(batch), loss, [p.detach().clone() for p in model.parameters()]))
    (n_rep, loss_rep, rep), (n_w, loss_w, w) = steps
    assert n_w == int((counts > 0).sum()) < n_rep == int(counts.sum())
    assert loss_w == pytest.approx(loss_rep, rel=1e-5)
    for a, b in zip(rep, w):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_epoch_batches_cover_the_bootstrap_as_draws_or_as_distinct_comparisons() -> None:
    """`repeat`: every draw once per epoch in minibatches of ``batch_size``; `weight`: every comparison
    drawn at least once, once per epoch, none left out of the bag, in as many minibatches."""
    counts = np.random.default_rng(0).poisson(1.0, size=500)
    rep = epoch_batches(counts, 16, "repeat", np.random.default_rng(1))
    wei = epoch_batches(counts, 16, "weight", np.random.default_rng(1))
    assert np.array_equal(np.bincount(np.concatenate(rep), minlength=500), counts)
    assert np.array_equal(np.sort(np.concatenate(wei)), np.flatnonzero(counts))
    assert abs(len(wei) - len(rep)) <= 1
    assert all(len(b) <= 16 for b in rep) and max(len(b) for b in wei) < 16


@pytest.mark.parametrize("validation", ["oob", "shared"])
def test_a_fit_on_weighted_bags_passes_a_third_fewer_comparisons_and_still_ranks(validation: str, rng) -> None:
    """``bag = "weight"`` learns the toy reward as well as the default, passing ~(1 - 1/e) of the
    comparisons through the nets; an unknown name is refused with the close match."""
    clips, comps = toy_dataset(200, 400, seed=0)
    passed = {}
    for bag in ("repeat", "weight"):
        model = RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=3))
        trainer = RewardTrainer(model, RewardTrainConfig(validation=validation, bag=bag), rng)
        sizes = []
        loss_of = trainer._member_loss
        trainer._member_loss = lambda i, inputs, c: sizes.append(len(c)) or loss_of(i, inputs, c)
        trainer.fit(clips.model_inputs(), comps)
        passed[bag] = sum(sizes)
        assert held_out_pair_accuracy(model, seed=1000) >= 0.90, bag
    assert 0.55 < passed["weight"] / passed["repeat"] < 0.72
    with pytest.raises(PrefrlError, match="did you mean `weight`"):
        RewardTrainConfig(bag="weights")


@pytest.mark.parametrize("layout", ["hwc", "chw", "hw"])
def test_random_shift_moves_each_clip_as_a_whole_by_at_most_pad_pixels(layout: str) -> None:
    rng = np.random.default_rng(0)
    net = types.SimpleNamespace(channels_last=layout == "hwc")
    frames = torch.zeros(6, 5, 12, 12, dtype=torch.uint8)  # a dot at (5, 6) on every step
    frames[:, :, 5, 6] = 255
    obs = {"hwc": frames.unsqueeze(-1).repeat(1, 1, 1, 1, 3), "chw": frames.unsqueeze(2).repeat(1, 1, 3, 1, 1),
           "hw": frames}[layout]
    out = random_shift(obs, 2, net, rng)
    assert out.shape == obs.shape and out.dtype == torch.uint8
    plane = {"hwc": out[..., 0], "chw": out[:, :, 0], "hw": out}[layout]
    moves = set()
    for clip in plane:
        at = [tuple(torch.nonzero(step == 255)[0].tolist()) for step in clip]
        assert len(set(at)) == 1  # every step of a clip moves the same way
        assert all(int((step == 255).sum()) == 1 for step in clip)  # nothing duplicated or lost in the middle
        dy, dx = at[0][0] - 5, at[0][1] - 6
        assert max(abs(dy), abs(dx)) <= 2
        moves.add((dy, dx))
    assert len(moves) > 1  # clips move differently
    assert torch.equal(random_shift(obs, 0, net, rng), obs)
    with pytest.raises(PrefrlError, match="image observations"):
        random_shift(torch.zeros(2, 3, 4), 2, net, rng)
    with pytest.raises(PrefrlError, match="shift"):
        RewardTrainConfig(shift=-1)


def test_a_cnn_fit_with_random_shifts_still_learns_the_reward(rng: np.random.Generator) -> None:
    """Shift augmentation on: the CNN still learns to rank held-out clips by a reward that counts
    bright steps (the fit sees shifted clips; scoring does not shift)."""
    def clips(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        r = np.random.default_rng(seed)
        obs = r.integers(0, 40, (n, 6, 4, 16, 16)).astype(np.uint8)
        bright = r.random((n, 6)) < r.random((n, 1))  # clips differ in how many bright steps they hold
        y, x = r.integers(3, 11, 2)
        obs[bright, :, y : y + 3, x : x + 3] = 255
        return {"obs": obs, "acts": np.zeros((n, 6), np.int64)}, bright.sum(axis=1).astype(float)

    train, ret = clips(80, 1)
    i, j = rng.integers(0, 80, (2, 240))
    keep = ret[i] != ret[j]
    comps = Comparisons(i[keep], j[keep], (ret[i[keep]] > ret[j[keep]]).astype(np.float32))
    model = _cnn_ensemble()
    RewardTrainer(model, RewardTrainConfig(epochs=15, batch_size=16, lr=3e-3, shift=2), rng).fit(train, comps)
    test, ret_t = clips(60, 2)
    pred = model.predict_clip_returns(test).mean(axis=1)
    a, b = np.triu_indices(60, 1)
    strict = ret_t[a] != ret_t[b]
    acc = ((pred[a] - pred[b]) * np.sign(ret_t[a] - ret_t[b]) > 0)[strict].mean()
    assert acc > 0.8


@pytest.mark.parametrize("validation", ["oob", "shared"])
def test_a_fit_trains_only_on_the_masked_comparisons(validation: str) -> None:
    """``train_mask``: the comparisons left out do not move the weights (their labels may be anything),
    and a mask does change what is learned."""
    clips, comps = toy_dataset(60, 120, seed=0)
    mask = np.zeros(len(comps), bool)
    mask[::3] = True
    flipped = dataclasses.replace(comps, label=np.where(mask, comps.label, 1.0 - comps.label))

    def weights(c, m):
        torch.manual_seed(0)
        model = RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=3))
        RewardTrainer(model, RewardTrainConfig(validation=validation, epochs=1, val_every=1),
                      np.random.default_rng(0)).fit(clips.model_inputs(), c, train_mask=m)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    masked = weights(comps, mask)
    assert torch.equal(masked, weights(flipped, mask))
    assert not torch.allclose(masked, weights(comps, None))
    with pytest.raises(PrefrlError, match="train_mask has shape"):
        weights(comps, mask[:-1])
