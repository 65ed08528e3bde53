"""The labeling engine on its own: toy clips stand in for a learner's rollouts; no RL anywhere."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import TINY_NET, TOY_SPEC

from prefrl.core.engine import LabelingEngine, LabelSchedule, PrefsConfig, replay_mask
from prefrl.core.ensemble import RewardEnsemble
from prefrl.core.oracles import HumanOracle, TeacherOracle, make_oracle, open_oracle
from prefrl.core.rundir import Meta
from prefrl.core.store import PreferenceStore
from prefrl.core.toy import toy_clips
from prefrl.core.trainer import RewardTrainConfig, RewardTrainer
from prefrl.core.types import Clips, PrefrlError

TOTAL = 10_000


def _engine(store: PreferenceStore, oracle_name: str = "synthetic", budget: int = 40, seed: int = 0,
            **prefs) -> LabelingEngine:
    rng = np.random.default_rng(seed)
    cfg = PrefsConfig(labels=budget, retrain_fraction=0.0, reward_epochs=2, **prefs)
    ens = RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=2))
    trainer = RewardTrainer(ens, RewardTrainConfig(epochs=2, batch_size=16), rng)
    oracle = open_oracle(oracle_name, store, rng, since_id=store.last_judgment_id())
    return LabelingEngine(store, oracle, trainer, cfg.schedule(TOTAL), cfg, rng)


def _pool(seed: int, n: int = 40):
    return toy_clips(n, length=8, seed=seed)


def test_schedule_is_asked_step_by_step_and_the_budget_is_never_exceeded(tmp_path):
    with PreferenceStore(tmp_path) as store:
        eng = _engine(store, budget=40)
        assert eng.schedule.initial == 10 and eng.initial_due() == 10
        assert eng.ask_initial(_pool(0)) == 10
        assert eng.initial_due() == 0 and store.count_judgments() == 10
        seen = []
        for k, t in enumerate(range(1000, 3 * TOTAL, 1000)):  # the learner runs past its planned steps
            rep = eng.step(t, _pool(k + 1))
            seen.append(rep.labels)
            assert rep.labels == store.count_judgments() <= 40
            assert rep.labels == min(eng.schedule.due(t), 40)
        assert seen == sorted(seen) and seen[-1] == 40
        assert store.get_meta(Meta.LABEL_BUDGET.value) == 40
        assert eng.n_refits >= 5  # refit whenever new judgments came in (retrain_fraction 0)


def test_refits_make_the_model_rank_held_out_clips(tmp_path):
    with PreferenceStore(tmp_path) as store:
        eng = _engine(store, budget=150)
        eng.ask_initial(_pool(0, 120))
        eng.refit(30)
        for k, t in enumerate(range(2000, TOTAL + 1, 2000)):
            eng.step(t, _pool(k + 1, 120))
        held = toy_clips(200, length=8, seed=999)
        pred = eng.ensemble.predict_clip_returns(held.model_inputs()).mean(axis=1)
        true = held.true_returns()
        i, j = np.triu_indices(len(held), 1)
        acc = np.mean((pred[i] - pred[j]) * (true[i] - true[j]) > 0)
        assert acc > 0.8, acc


def test_a_refit_scores_the_model_on_judgments_it_was_not_fit_on_first(tmp_path):
    with PreferenceStore(tmp_path) as store:
        eng = _engine(store, budget=200)
        eng.ask_initial(_pool(0, 120))
        first = eng.refit(30)
        assert "reward/new_accuracy" not in first  # nothing to score before the first fit
        eng.ask(_pool(1, 120), 40, method="random")
        m = eng.refit(2)
        assert m["reward/new_count"] == (store.count_judgments() - 50) - _ties_after(store, 50)
        # held out by time: the fitted model (toy reward is learnable) ranks the new pairs well
        assert m["reward/new_accuracy"] > 0.75, m
        assert "reward/new_accuracy" not in eng.refit(2)  # no judgment arrived since the last fit
        # the engine keeps every refit's figures in order (a monitor reading between refits misses none)
        assert eng.new_scores == [(m["reward/new_count"], m["reward/new_accuracy"])]


def test_a_refit_reads_the_new_judgments_clip_returns_cached_when_they_were_asked(tmp_path):
    """Clips asked about from a scored pool keep their returns: the refit's score on the new judgments
    reads them (no scoring), and gives the figures that scoring the clips again gives."""
    with PreferenceStore(tmp_path) as store:
        eng = _engine(store, budget=200)
        eng.ask_initial(_pool(0, 120))
        eng.refit(30)
        pool, keys = _pool(1, 120), list(range(1000, 1120))
        eng.clip_returns(pool, keys)
        eng.ask(pool, 40, method="random", keys=keys)
        clips, comps = eng.training_data()
        expected = eng._score_new(clips.model_inputs(), comps, eng.new_judgments())  # no ids: scored afresh
        assert expected["reward/new_count"] > 20
        calls = []
        evaluate = eng.trainer.evaluate
        eng.trainer.evaluate = lambda *a, **kw: calls.append(1) or evaluate(*a, **kw)
        m = eng.refit(2)
        assert calls == []
        for k, v in expected.items():
            assert m[k] == pytest.approx(v, rel=1e-5), k


def _ties_after(store: PreferenceStore, n_old: int) -> int:
    return sum(1 for j in store.judgments()[n_old:] if j.label in (None, 0.5))


def test_skips_are_stored_but_never_trained_on(tmp_path):
    with PreferenceStore(tmp_path) as store:
        eng = _engine(store, budget=30)
        eng.oracle = TeacherOracle(store, make_oracle("skip", np.random.default_rng(0), eps_skip=1.0))
        clips = _pool(0)
        clips.true_rew[:] = -1.0  # all returns equal (spread 0): every pair is at the skip threshold
        eng.ask_initial(clips)
        assert store.count_judgments() == eng.schedule.initial
        assert store.count_judgments(include_skips=False) == 0
        assert eng.refit() == {}  # nothing labeled: no fit at all
        # one real label among the skips: the fit sees exactly one labeled comparison
        ids = store.clip_ids()
        store.add_judgment(ids[0], ids[1], 1.0, source="synthetic")
        m = eng.refit()
        assert m["reward/comparisons"] == store.count_judgments()
        assert m["reward/labeled"] == 1.0


def test_late_human_judgments_are_refit_at_finish(tmp_path):
    with PreferenceStore(tmp_path) as store:
        eng = _engine(store, "human", budget=12)
        assert isinstance(eng.oracle, HumanOracle) and eng.keep_frames  # people need the frames
        pool = toy_clips(20, length=6, seed=0, frames=True)
        eng.ask_initial(pool)
        assert store.count_pending() == 3 and eng.initial_due() == 0  # outstanding counts as asked
        rep = eng.step(TOTAL, pool)
        assert rep.asked == 9 and rep.outstanding == 12 and rep.refit is None  # nothing judged yet
        assert eng.step(TOTAL, pool).asked == 0  # the budget is spent while people are still judging
        for q in store.pending_queries():  # a person answers after the learner's last step
            store.add_judgment(q.left, q.right, 1.0, source="human", annotator="ann", query_id=q.id)
        m = eng.finish(ref=pool)
        assert m is not None and m["reward/comparisons"] == 12
        assert eng.labels_at_fit == 12 and eng.fit_judgment_id == store.last_judgment_id()
        assert eng.finish() is None  # nothing new since


def test_resume_mid_schedule_asks_only_what_is_still_due(tmp_path):
    with PreferenceStore(tmp_path) as store:
        eng = _engine(store, budget=40)
        eng.ask_initial(_pool(0))
        eng.step(4000, _pool(1))
        had = store.count_judgments()
        assert 10 < had < 40
    # the process dies; a new one opens the same store and continues the same schedule
    with PreferenceStore(tmp_path) as store:
        eng2 = _engine(store, budget=40, seed=1)
        assert eng2.initial_due() == 0
        assert eng2.ask_initial(_pool(2)) == 0  # the up-front labels are not asked twice
        assert eng2.due(4000) == 0
        rep = eng2.step(TOTAL, _pool(3))
        assert rep.asked == 40 - had and store.count_judgments() == 40


def test_pool_predictions_are_cached_between_refits_and_a_refit_drops_them(tmp_path, monkeypatch):
    with PreferenceStore(tmp_path) as store:
        eng = _engine(store, budget=60)
        eng.ask_initial(_pool(0, 60))
        eng.refit(5)
        pool, keys = _pool(1, 30), list(range(100, 130))
        scored: list[int] = []
        predict = eng.ensemble.predict_clip_returns
        monkeypatch.setattr(eng.ensemble, "predict_clip_returns",
                            lambda inputs, **kw: scored.append(len(inputs["obs"])) or predict(inputs, **kw))
        first = eng.clip_returns(pool, keys)
        fresh = predict(pool.model_inputs(), normalised=False)
        np.testing.assert_allclose(first, fresh, rtol=1e-6)
        # the pool moves on: 10 clips leave, 10 new ones come; only the new ones are scored
        newer = _pool(2, 10)
        pool2 = Clips.concat([pool[np.arange(10, 30)], newer])
        keys2 = keys[10:] + list(range(130, 140))
        scored.clear()
        served = eng.clip_returns(pool2, keys2)
        assert scored == [10]
        np.testing.assert_allclose(served, predict(pool2.model_inputs(), normalised=False), rtol=1e-5, atol=1e-6)
        norm = eng.clip_returns(pool2, keys2, normalised=True)  # the RL-time scale, from the cached raw returns
        np.testing.assert_allclose(norm, predict(pool2.model_inputs()), rtol=1e-4, atol=1e-5)
        assert set(eng._returns) == set(keys2)  # clips gone from the pool are dropped
        # returns the caller already has from this model (the learner's rollout scoring) are taken as given
        newest, newest_keys = _pool(3, 5), list(range(140, 145))
        pool3, keys3 = Clips.concat([pool2[np.arange(5, 30)], newest]), keys2[5:] + newest_keys
        given = predict(newest.model_inputs(), normalised=False)
        scored.clear()
        np.testing.assert_allclose(eng.clip_returns(pool3, keys3, known=dict(zip(newest_keys, given)))[-5:], given)
        assert scored == []
        pool2, keys2 = pool3, keys3
        served = eng.clip_returns(pool2, keys2)
        scored.clear()
        assert eng.ask(pool2, 5, keys=keys2) == 5
        assert scored == []  # query selection read the cached returns: nothing rescored
        # a refit changes the model: every cached prediction is dropped, and fresh ones differ
        eng.refit(3)
        assert eng._returns == {}
        scored.clear()
        after = eng.clip_returns(pool2, keys2)
        assert scored == [30]
        np.testing.assert_allclose(after, predict(pool2.model_inputs(), normalised=False), rtol=1e-5, atol=1e-6)
        assert not np.allclose(after, served)
        # a refit renormalised on the pool (as `step` does) fills the cache with the new model's returns
        # of it, scored on the way: served without scoring again, equal to fresh predictions
        eng.refit(3, ref=pool2, ref_keys=keys2)
        assert set(eng._returns) == set(keys2)
        scored.clear()
        refilled = eng.clip_returns(pool2, keys2)
        assert scored == []
        np.testing.assert_allclose(refilled, predict(pool2.model_inputs(), normalised=False), rtol=1e-5, atol=1e-6)
        assert not np.allclose(refilled, after)


def test_refits_use_only_the_newest_max_train_labels(tmp_path):
    with PreferenceStore(tmp_path) as store:
        eng = _engine(store, budget=60, max_train_labels=12)
        eng.ask_initial(_pool(0, 60))
        eng.ask(_pool(1, 60), 20, method="random")
        assert store.count_judgments(include_skips=False) > 12
        m = eng.refit(2)
        assert m["reward/labeled"] == 12.0
        newest = [(j.left, j.right) for j in store.judgments() if j.label is not None][-12:]
        _, comps, ids = store.training_data(max_labels=12)
        lab = comps.labeled()
        assert [(ids[a], ids[b]) for a, b in zip(lab.left, lab.right)] == newest
    with pytest.raises(PrefrlError, match="max_train_labels must be >= 1"):
        PrefsConfig(max_train_labels=0)
    with pytest.raises(PrefrlError, match="clip_cache_mib must be"):
        PrefsConfig(clip_cache_mib=-1.0)


def test_prefs_config_refuses_bad_values():
    with pytest.raises(PrefrlError, match="labels must be >= 0"):
        PrefsConfig(labels=-5)
    with pytest.raises(PrefrlError, match="labels must be an integer"):
        PrefsConfig(labels="300")  # type: ignore[arg-type]
    with pytest.raises(PrefrlError, match="query must be one of"):
        PrefsConfig(query="entropyy")
    assert LabelSchedule(0, 100).due(50) == 0


# ---- the same engine for a text learner: completions of prompts are the items -------------------
def _bag_of_letters(prompts: list[str], completions: list[str]) -> dict[str, np.ndarray]:
    x = np.zeros((len(completions), 1, 26), np.float32)
    for i, c in enumerate(completions):
        for ch in c:
            if "a" <= ch <= "z":
                x[i, 0, ord(ch) - 97] += 1
    return {"obs": x}


def _text_pool(n: int, seed: int):
    from prefrl.core.types import TextItems

    rng = np.random.default_rng(seed)
    words = ["good", "great", "bad", "awful", "fine", "okay"]
    comps = [" ".join(rng.choice(words, 4)) for _ in range(n)]
    score = np.array([sum(w in ("good", "great") for w in c.split()) - sum(w in ("bad", "awful") for w in c.split())
                      for c in comps], np.float32)
    prompts = ["The food was"] * n
    return TextItems(prompts, comps, _bag_of_letters(prompts, comps), score + 0.01 * rng.random(n))


def test_a_text_learner_plugs_into_the_same_engine(tmp_path):
    from prefrl.core.nets import InputSpec, RewardModelConfig

    with PreferenceStore(tmp_path) as store:
        rng = np.random.default_rng(0)
        cfg = PrefsConfig(labels=120, retrain_fraction=0.0, reward_epochs=10)
        ens = RewardEnsemble(InputSpec(obs_shape=(26,)), RewardModelConfig(hidden=(16,), use_actions=False, members=2))
        oracle = open_oracle("synthetic", store, rng)
        eng = LabelingEngine(store, oracle, RewardTrainer(ens, RewardTrainConfig(epochs=10, batch_size=16), rng),
                             cfg.schedule(TOTAL), cfg, rng, encode_texts=_bag_of_letters)
        eng.ask_initial(_text_pool(60, 0))
        eng.refit(30)
        for k, t in enumerate(range(2000, TOTAL + 1, 2000)):
            eng.step(t, _text_pool(60, k + 1))
        assert store.count_judgments() == 120
        assert all(store.is_text(i) for j in store.judgments() for i in (j.left, j.right))
        held = _text_pool(200, 99)
        pred = eng.ensemble.predict_clip_returns(held.model_inputs()).mean(axis=1)
        i, j = np.triu_indices(len(held), 1)
        strict = np.abs(held.scores[i] - held.scores[j]) > 0.5
        acc = np.mean(((pred[i] - pred[j]) * (held.scores[i] - held.scores[j]) > 0)[strict])
        assert acc > 0.85, acc


def test_novelty_query_finds_rare_steps_keeps_a_capped_bank_and_survives_a_restart(tmp_path):
    with PreferenceStore(tmp_path) as store:
        eng = _engine(store, budget=80, query="novelty", novelty_bank=64)
        eng.ask_initial(_pool(0, 60))
        assert 0 < len(eng._bank["obs"]) <= 64  # the asked clips' steps, capped
        eng.refit(3)
        pool, keys = _pool(1, 30), list(range(100, 130))
        for clip, dim, sign in ((4, 0, 1), (17, 1, -1), (25, 2, 1)):  # one step of each unlike anything asked
            pool.obs[clip, 3, dim] += sign * 40.0
        assert eng.ask(pool, 3, keys=keys) == 3
        asked = store.judgments()[-3:]
        novel = store.load_clips([j.left for j in asked])
        assert (np.abs(novel.obs).max(axis=(1, 2)) > 20).all()  # the novel side of each pair is a rare clip
        assert set(eng._embeddings) == set(keys) and eng._bank_emb is not None
        assert len(eng._bank["obs"]) == len(eng._bank_emb) <= 64
        eng.refit(2)
        assert eng._embeddings == {} and eng._bank_emb is None  # a refit changes the embedding
    with PreferenceStore(tmp_path) as store:  # a restarted run measures novelty against what it asked before
        eng = _engine(store, budget=80, query="novelty", novelty_bank=64)
        assert len(eng.bank_embeddings()) == 64


def test_replay_mask_keeps_every_new_judgment_and_draws_the_ratio_of_old_ones():
    rng = np.random.default_rng(0)
    mask = replay_mask(100, 20, 1.5, rng)
    assert mask[80:].all() and mask[:80].sum() == 30
    assert not np.array_equal(mask, replay_mask(100, 20, 1.5, rng))  # drawn afresh
    assert replay_mask(100, 20, 4.0, rng) is None  # 80 old ones wanted: all of them
    assert replay_mask(100, 0, 1.0, rng) is None


def test_refits_with_refit_replay_train_on_the_new_labels_and_a_sample_of_earlier_ones(tmp_path):
    with PreferenceStore(tmp_path) as store:
        eng = _engine(store, budget=60, refit_replay=0.5)
        seen = []
        fit = eng.trainer.fit
        eng.trainer.fit = lambda inputs, comps, epochs=None, train_mask=None: (
            seen.append((len(comps), None if train_mask is None else train_mask.copy())) or fit(inputs, comps, epochs, train_mask))
        eng.ask_initial(_pool(0, 60))
        eng.refit(2)
        n0 = store.count_judgments()
        eng.ask(_pool(1, 60), 12, method="random")
        eng.refit()
        (first, m0), (n1, m1) = seen
        assert m0 is None and first == n0  # the initial fit trains on all
        assert n1 == n0 + 12 and m1[n0:].all() and m1[:n0].sum() == 6
    with pytest.raises(PrefrlError, match="refit_replay must be"):
        PrefsConfig(refit_replay=-1.0)
