"""The store's clip cache: a byte cap with least-recently-used eviction, reloads from the
(compressed) clip files, lazy training data and the newest-N-labels window."""

from __future__ import annotations

import numpy as np
import pytest

from prefrl.core.store import PreferenceStore, StoredClips
from prefrl.core.toy import toy_clips
from prefrl.core.types import Clips, PrefrlError


def _frames_clips(n: int, seed: int) -> Clips:
    """Stacked-frame clips like Atari's: uint8 (N, T, 4, 16, 16), each step's stack shifted by one frame."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 4, (n, 13, 16, 16), dtype=np.uint8) * 60  # few grey levels, like a game screen
    obs = np.stack([raw[:, t : t + 4] for t in range(10)], axis=1)  # (n, 10, 4, 16, 16)
    acts = rng.integers(0, 6, (n, 10))
    rew = rng.integers(-1, 2, (n, 10)).astype(np.float32)
    return Clips(obs, acts, rew)


@pytest.mark.parametrize("stacked", [True, False])
def test_cache_never_exceeds_its_cap_and_evicted_clips_reload_equal(tmp_path, stacked: bool):
    clips = _frames_clips(12, 0)
    if not stacked:  # observations that are not frame stacks are cached as they are
        clips = Clips(clips.obs[:, ::-1].copy(), clips.acts, clips.true_rew)
    frames = (10 + 3) * 16 * 16 if stacked else clips.obs[0].nbytes  # a stack's frames are cached once
    per_clip = frames + clips.acts[0].nbytes + clips.true_rew[0].nbytes
    cap_mib = 3.5 * per_clip / 2**20  # room for 3 clips
    with PreferenceStore(tmp_path, cache_mib=cap_mib) as store:
        ids = store.add_clips(clips)
        assert 0 < store.cache_nbytes <= store.cache_bytes and len(store._cache) == 3  # the newest stored clips
        rng = np.random.default_rng(1)
        loads = store.cache_loads
        for _ in range(60):
            pick = rng.choice(len(ids), size=rng.integers(1, 3), replace=False)
            got = store.load_clips([ids[k] for k in pick])
            np.testing.assert_array_equal(got.obs, clips.obs[pick])
            np.testing.assert_array_equal(got.acts, clips.acts[pick])
            np.testing.assert_array_equal(got.true_rew, clips.true_rew[pick])
            assert store.cache_nbytes <= store.cache_bytes
            assert store.cache_nbytes == sum(c.nbytes for c in store._cache.values())
        assert store.cache_loads > loads  # evicted clips were read back from their files
        # least recently used goes first: touch clip 0, load two others, clip 0 is still cached
        store.load_clips([ids[0]])
        store.load_clips([ids[5], ids[6]])
        assert ids[0] in store._cache and list(store._cache)[-1] == ids[6]
        store.load_clips([ids[7]])
        assert ids[0] not in store._cache  # now the oldest: evicted
        store.set_cache_mib(0)  # shrinking the cap evicts at once; clips still load (from disk each time)
        assert store.cache_nbytes == 0 and not store._cache
        np.testing.assert_array_equal(store.load_clips([ids[3]]).obs, clips.obs[[3]])
        assert not store._cache
        with pytest.raises(PrefrlError, match="clip cache size"):
            store.set_cache_mib(-1)


def test_clip_files_are_compressed(tmp_path):
    clips = _frames_clips(4, 2)
    with PreferenceStore(tmp_path) as store:
        ids = store.add_clips(clips)
        size = store._clip_path(ids[0]).stat().st_size
    assert size < clips.obs[0].nbytes / 3  # stacked frames repeat: zlib finds the repeats


def test_lazy_training_data_equals_eager_and_holds_no_clips(tmp_path):
    clips = toy_clips(10, length=6, seed=3)
    with PreferenceStore(tmp_path, cache_mib=0) as store:
        ids = store.add_clips(clips)
        for a, b in [(0, 1), (2, 3), (4, 9), (1, 9)]:
            store.add_judgment(ids[a], ids[b], 1.0, source="synthetic")
        eager, comps, tids = store.training_data()
        lazy, comps2, tids2 = store.training_data(lazy=True)
        assert isinstance(lazy, StoredClips) and tids == tids2 and len(lazy) == len(eager) == 6
        np.testing.assert_array_equal(comps.left, comps2.left)
        inputs = lazy.model_inputs()
        assert inputs["obs"].shape == eager.obs.shape and inputs["obs"].dtype == eager.obs.dtype
        idx = np.array([5, 0, 3, 3])
        np.testing.assert_array_equal(inputs["obs"][idx], eager.obs[idx])
        np.testing.assert_array_equal(inputs["acts"][2:5], eager.acts[2:5])
        np.testing.assert_array_equal(inputs["obs"][4], eager.obs[4])
        np.testing.assert_array_equal(np.asarray(inputs["obs"]), eager.obs)
        assert store.cache_nbytes == 0  # a cap of 0 keeps nothing: every read came from disk


def test_max_labels_keeps_the_newest_labeled_judgments(tmp_path):
    clips = toy_clips(12, length=4, seed=4)
    with PreferenceStore(tmp_path) as store:
        ids = store.add_clips(clips)
        pairs = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)]
        labels = [1.0, 0.0, None, 1.0, None, 0.5]  # two skips
        for (a, b), lab in zip(pairs, labels):
            store.add_judgment(ids[a], ids[b], lab, source="synthetic")
        _, comps, tids = store.training_data(max_labels=2)
        # the newest 2 labels are pairs 3 and 5; the skip between them comes along (never trained on)
        assert tids == [ids[k] for k in (6, 7, 8, 9, 10, 11)]
        assert np.isnan(comps.label[1]) and comps.label[[0, 2]].tolist() == [1.0, 0.5]
        assert len(comps.labeled()) == 2
        _, comps, _ = store.training_data(max_labels=3)
        assert len(comps.labeled()) == 3 and len(comps) == 5  # from pair 1 on (pair 0 is the oldest label)
        _, comps, _ = store.training_data(max_labels=100)
        assert len(comps) == 6


def test_clip_arrays_equal_load_clips_frames_last_in_memory_and_acts_never_unpack_frames(tmp_path, monkeypatch):
    """``load_clip_array`` (what a refit minibatch reads): equal to ``load_clips`` for frame stacks, other
    observations and a mix of both, from the cache or from disk; a stacked batch has the stacking axis
    innermost in memory (channels-last, what the CNN's convolution reads without a copy); ``acts``
    and ``true_rew`` never rebuild the observations."""
    import torch

    from prefrl.core.store import _CachedClip

    stacked = _frames_clips(6, 5)
    flat = Clips(stacked.obs[:, ::-1].copy(), stacked.acts, stacked.true_rew)  # not frame stacks
    per_clip = (10 + 3) * 16 * 16 + stacked.acts[0].nbytes + stacked.true_rew[0].nbytes
    with PreferenceStore(tmp_path, cache_mib=4.5 * per_clip / 2**20) as store:  # some reads come from disk
        ids = store.add_clips(stacked) + store.add_clips(flat)
        for pick in ([0, 7, 3, 3, 11], [1, 2, 5], [8, 9], [4]):
            sel = [ids[k] for k in pick]
            ref = store.load_clips(sel)
            for name in ("obs", "acts", "true_rew"):
                np.testing.assert_array_equal(store.load_clip_array(sel, name), getattr(ref, name))
        obs = store.load_clip_array(ids[:3] + ids[7:8], "obs")  # three stacks and one other clip
        assert obs.shape == (4, 10, 4, 16, 16) and obs.strides[2] == 1
        assert torch.as_tensor(obs).reshape(40, 4, 16, 16).is_contiguous(memory_format=torch.channels_last)

        def no_unpack(self):
            raise AssertionError("observations were rebuilt to read actions")

        monkeypatch.setattr(_CachedClip, "unpack", no_unpack)
        np.testing.assert_array_equal(store.load_clip_array(ids, "acts"), np.concatenate([stacked.acts, flat.acts]))
        np.testing.assert_array_equal(store.load_clip_array(ids[::-1], "true_rew"),
                                      np.concatenate([stacked.true_rew, flat.true_rew])[::-1])


def test_lazy_stacked_training_data_equals_eager(tmp_path):
    clips = _frames_clips(8, 6)
    with PreferenceStore(tmp_path, cache_mib=0.01) as store:  # 1 clip fits: nearly every read from disk
        ids = store.add_clips(clips)
        for a, b in [(0, 1), (2, 3), (4, 7), (1, 7)]:
            store.add_judgment(ids[a], ids[b], 1.0, source="synthetic")
        eager, _, _ = store.training_data()
        lazy, _, _ = store.training_data(lazy=True)
        inputs = lazy.model_inputs()
        for idx in (np.array([5, 0, 3, 3]), slice(1, 4), 2):
            np.testing.assert_array_equal(inputs["obs"][idx], eager.obs[idx])
            np.testing.assert_array_equal(inputs["acts"][idx], eager.acts[idx])
        np.testing.assert_array_equal(np.asarray(inputs["obs"]), eager.obs)


def test_packed_clips_give_the_same_clips_back_in_a_third_of_the_memory():
    from prefrl.core.store import PackedClips

    stacked = _frames_clips(5, 7)
    flat = Clips(stacked.obs[:, ::-1].copy(), stacked.acts, stacked.true_rew)
    for clips, smaller in ((stacked, True), (flat, False), (Clips.concat([stacked, flat]), False)):
        packed = PackedClips(clips)
        back = packed.clips()
        assert len(packed) == len(clips)
        for name in ("obs", "acts", "true_rew"):
            np.testing.assert_array_equal(getattr(back, name), getattr(clips, name))
        np.testing.assert_array_equal(packed.true_returns(), clips.true_returns())
        assert (packed.nbytes < clips.obs.nbytes / 2) == smaller  # only stacks: 13 distinct frames of 40
    no_rew = PackedClips(Clips(stacked.obs, stacked.acts))
    assert no_rew.true_rew is None and no_rew.clips().true_rew is None
    with pytest.raises(PrefrlError, match="true_rew"):
        no_rew.true_returns()
