"""Every loader of user files gives a result or a ``PrefrlError``, never another exception.

Hypothesis feeds each loader arbitrary bytes, arbitrary JSON and valid files with bytes
overwritten, cut or inserted: ``comparisons.jsonl`` (``load_dataset``), ``clips.npz``
(``Clips.load_npz``), text preference / SFT / prompt JSONL (``prefrl.text.data``), preset
TOML (``_read_toml``, ``load_task``) and the preference store file (open, read, stats,
export, label). The named regressions (a 0x80 byte, a 5,000-digit integer, JSON nested
100,000 deep, a pickled object array, a zip bomb) run on every pass.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from prefrl.core.dataset import load_dataset
from prefrl.core.store import STORE_FILE, PreferenceStore
from prefrl.core.toy import toy_clips
from prefrl.core.types import Clips, PrefrlError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def mutations(size: int) -> st.SearchStrategy:
    """Edits of a file of ``size`` bytes: overwritten bytes, then an optional cut and an optional insert."""
    return st.tuples(
        st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 255)), max_size=24),
        st.none() | st.integers(0, size),
        st.none() | st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=64)),
    )


def mutate(data: bytes, edit) -> bytes:
    flips, cut, insert = edit
    b = bytearray(data)
    for pos, val in flips:
        b[pos] = val
    if cut is not None:
        b = b[:cut]
    if insert is not None:
        pos, chunk = insert
        b[pos:pos] = chunk
    return bytes(b)


def only_prefrl_errors(call) -> object:
    try:
        return call()
    except PrefrlError as e:
        msg = str(e)
        assert msg and len(msg) < 2000, msg[:300]
        return e


@pytest.fixture(scope="module")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="loaders-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def fresh(workdir: Path) -> Path:
    d = Path(tempfile.mkdtemp(dir=workdir))
    return d


# ---- comparisons.jsonl ---------------------------------------------------------------------

GOOD_LINE = json.dumps({"left": 0, "right": 1, "label": 1.0, "source": "synthetic"})


def dataset_with(workdir: Path, comparisons: bytes) -> Path:
    d = fresh(workdir)
    toy_clips(5, length=3, seed=0).save_npz(d / "clips.npz")
    (d / "comparisons.jsonl").write_bytes(comparisons)
    return d


@pytest.mark.parametrize(
    "line, expect",
    [
        (b'{"left": 0, "right": 1, "label": 1.0, "source": "\x80"}', r":2: not UTF-8 text \(byte 0x80 at column 50\)"),
        (b'{"left": ' + b"1" * 5000 + b', "right": 1, "label": 1}', r":2: not valid JSON \(Exceeds the limit"),
        (b"[" * 100_000 + b"]" * 100_000, r":2: not valid JSON \(nested too deeply\)"),
        (b'{"left": ' + b"[" * 500 + b"]" * 500 + b', "right": 1, "label": 1}', r":2: `left` must be an integer clip index, got \[\[\[\.\.\.\]\]\]"),
        (b'{"left": 0, "right": 1, "label": NaN}', r":2: `label` must be a probability in \[0, 1\], got nan"),
        (b'{"left": 0, "right": 1, "label": "' + b"x" * 100_000 + b'"}', r":2: `label` must be a probability .*'xxxx"),
    ],
    ids=["non-utf8", "5000-digit-int", "nested-100000", "nested-field", "nan", "huge-string"],
)
def test_comparisons_regressions_name_file_and_line(workdir, line, expect) -> None:
    d = dataset_with(workdir, GOOD_LINE.encode() + b"\n" + line + b"\n")
    with pytest.raises(PrefrlError, match=rf"{d / 'comparisons.jsonl'}{expect}") as e:
        load_dataset(d)
    assert len(str(e.value)) < 400


@FAST
@given(body=st.binary(max_size=300) | st.lists(json_values, max_size=4).map(
    lambda vs: "\n".join(json.dumps(v) for v in vs).encode()))
@example(body=b"\x80")
def test_comparisons_jsonl_arbitrary_bytes_and_json(workdir, body) -> None:
    d = dataset_with(workdir, body)
    only_prefrl_errors(lambda: load_dataset(d))


@FAST
@given(edit=mutations(len(GOOD_LINE) * 3 + 3))
def test_comparisons_jsonl_mutated(workdir, edit) -> None:
    d = dataset_with(workdir, mutate(("\n".join([GOOD_LINE] * 3) + "\n").encode(), edit))
    only_prefrl_errors(lambda: load_dataset(d))


# ---- clips.npz -----------------------------------------------------------------------------


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


_C = toy_clips(3, length=2, seed=1)
GOOD_NPZ = npz_bytes(obs=_C.obs, acts=_C.acts, true_rew=_C.true_rew)


def load_npz_bytes(workdir: Path, data: bytes) -> object:
    path = fresh(workdir) / "clips.npz"
    path.write_bytes(data)
    return only_prefrl_errors(lambda: Clips.load_npz(path))


@FAST
@given(edit=mutations(len(GOOD_NPZ)))
def test_clips_npz_mutated(workdir, edit) -> None:
    load_npz_bytes(workdir, mutate(GOOD_NPZ, edit))


@FAST
@given(data=st.binary(max_size=400))
@example(data=b"PK\x05\x06" + b"\x00" * 18)  # an empty zip
def test_clips_npz_arbitrary_bytes(workdir, data) -> None:
    load_npz_bytes(workdir, data)


def test_clips_npz_refuses_pickles_strings_bombs_and_lies(workdir, monkeypatch) -> None:
    import prefrl.core.types as types

    objects = np.empty((2, 3), dtype=object)
    buf = io.BytesIO()
    np.savez(buf, obs=objects, acts=np.zeros((2, 3)), allow_pickle=True)
    assert "holds Python objects (a pickle)" in str(load_npz_bytes(workdir, buf.getvalue()))
    assert "has dtype <U1; expected numbers" in str(load_npz_bytes(workdir, npz_bytes(obs=np.full((2, 3), "a"), acts=np.zeros((2, 3)))))
    # A zip bomb: 64 MiB of zeros in a ~64 KiB archive, refused from its headers, unread.
    buf = io.BytesIO()
    np.savez_compressed(buf, obs=np.zeros((1024, 8192, 8), np.uint8), acts=np.zeros((1024, 8192), np.uint8))
    assert len(buf.getvalue()) < 1 << 20
    monkeypatch.setattr(types, "max_npz_bytes", lambda: 32 << 20)
    msg = str(load_npz_bytes(workdir, buf.getvalue()))
    assert "would take 0.1 GiB in memory, over the 0.0 GiB allowed" in msg and "refused unread" in msg
    # A header that claims more data than the archive holds.
    npy = io.BytesIO()
    np.save(npy, np.zeros((2, 3)))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # a valid archive whose obs.npy header claims 9 rows
        z.writestr("obs.npy", npy.getvalue().replace(b"'shape': (2, 3)", b"'shape': (9, 3)", 1))
        z.writestr("acts.npy", npy.getvalue())
    assert "is truncated: its header declares shape (9, 3)" in str(load_npz_bytes(workdir, buf.getvalue()))


# ---- text JSONL ----------------------------------------------------------------------------

TEXT_KEYS = ["prompt", "chosen", "rejected", "label", "input_text", "candidate_0", "candidate_1", "choice",
             "completions", "ranking", "completion", "text"]
text_objects = st.dictionaries(st.sampled_from(TEXT_KEYS), json_values, max_size=5)
GOOD_TEXT = (
    json.dumps({"prompt": "p", "chosen": " a", "rejected": " b"}) + "\n"
    + json.dumps({"input_text": "p", "candidate_0": " a", "candidate_1": " c", "choice": 1}) + "\n"
    + json.dumps({"prompt": "q", "completions": [" x", " y", " z"], "ranking": [2, 0, 1]}) + "\n"
    + json.dumps({"prompt": "q", "completion": " x"}) + "\n"
).encode()


def read_text_all(workdir: Path, data: bytes) -> None:
    from prefrl.text.data import read_preferences, read_prompts, read_sft

    path = fresh(workdir) / "prefs.jsonl"
    path.write_bytes(data)
    for reader in (read_preferences, read_sft, read_prompts):
        only_prefrl_errors(lambda: reader(path))


@FAST
@given(objs=st.lists(text_objects, max_size=4))
def test_text_jsonl_arbitrary_objects(workdir, objs) -> None:
    read_text_all(workdir, "\n".join(json.dumps(o) for o in objs).encode())


@FAST
@given(edit=mutations(len(GOOD_TEXT)))
@example(edit=([(5, 0x80)], None, None))
def test_text_jsonl_mutated(workdir, edit) -> None:
    read_text_all(workdir, mutate(GOOD_TEXT, edit))


def test_text_jsonl_regressions(workdir) -> None:
    from prefrl.text.data import read_preferences

    for body, expect in [
        (b'{"prompt": "\xff", "chosen": "a", "rejected": "b"}', r":1: not UTF-8 text \(byte 0xff"),
        (b'{"choice": ' + b"9" * 5000 + b"}", r":1: not valid JSON \(Exceeds the limit"),
        (b'{"chosen": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", r":1: not valid JSON \(nested too deeply\)"),
        (b'{"chosen": ' + b"[" * 900 + b"]" * 900 + b', "rejected": "b"}', r":1: field `chosen` is a list"),
        (b'{"completions": ["a", "b"], "ranking": ' + b"[" * 900 + b"]" * 900 + b"}", r":1: field `ranking` must be a list of indices"),
    ]:
        path = fresh(workdir) / "p.jsonl"
        path.write_bytes(body + b"\n")
        with pytest.raises(PrefrlError, match=rf"{path}{expect}") as e:
            read_preferences(path)
        assert len(str(e.value)) < 400


# ---- preset TOML ---------------------------------------------------------------------------

def _preset_bytes() -> bytes:
    from prefrl.control.tasks import list_tasks

    tasks = list_tasks()
    return Path(tasks[sorted(tasks)[0]]).read_bytes()


@FAST
@given(edit=st.data())
@example(edit=None)
def test_preset_toml_mutated(workdir, edit) -> None:
    from prefrl.control.tasks import _read_toml, load_task

    good = _preset_bytes()
    data = good if edit is None else mutate(good, edit.draw(mutations(len(good))))
    path = fresh(workdir) / "preset.toml"
    path.write_bytes(data)
    only_prefrl_errors(lambda: _read_toml(path))
    only_prefrl_errors(lambda: load_task(str(path)))


def test_preset_toml_regressions(workdir) -> None:
    from prefrl.control.tasks import _read_toml

    for body, expect in [
        (b'[env]\nid = "Pendulum\x80"\n', r":2: not UTF-8 text \(byte 0x80\)"),
        (b"[ppo]\nn_steps = " + b"7" * 5000 + b"\n", r": invalid TOML \(Exceeds the limit"),
        (b"x = " + b"[" * 100_000, r": invalid TOML \(nested too deeply\)"),
    ]:
        path = fresh(workdir) / "p.toml"
        path.write_bytes(body)
        with pytest.raises(PrefrlError, match=rf"{path}{expect}"):
            _read_toml(path)


# ---- the store file ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_store(workdir) -> bytes:
    root = workdir / "good-store"
    with PreferenceStore(root) as s:
        ids = s.add_texts(["p"] * 6, [f" c{i}" for i in range(6)], scores=[0.1 * i for i in range(6)])
        s.add_judgments(np.array([[ids[0], ids[1]], [ids[2], ids[3]]]), np.array([1.0, np.nan]), "synthetic")
        qids = s.add_queries(np.array([[ids[i], ids[i + 1]] for i in range(5)]), np.arange(5.0))
        s.add_judgment(ids[4], ids[5], 0.5, source="human", annotator="ann", query_id=qids[0])
        s.set_meta("label_budget", 10)
    return (root / STORE_FILE).read_bytes()


def exercise_store(root: Path) -> None:
    from prefrl.human.stats import store_stats

    for readonly in (True, False):
        store = only_prefrl_errors(lambda: PreferenceStore(root, create=False, readonly=readonly))
        if isinstance(store, PrefrlError):
            continue
        try:
            for call in (
                lambda: store.judgments(),
                lambda: store_stats(store),
                lambda: store.get_meta("label_budget"),
                lambda: store.count_open("ann", shared=True),
                lambda: store.text_training_data(),
                lambda: store.export(root.parent / f"out-{readonly}"),
                lambda: store.claim_queries("ann", 2),
                lambda: store.claim_queries("ann", 2, shared=True),
                lambda: store.add_judgment(1, 2, 1.0, source="human", annotator="ann"),
                lambda: store.undo_last("ann"),
            ):
                only_prefrl_errors(call)
        finally:
            store.close()


@FAST
@given(edit=st.data())
def test_store_file_mutated(workdir, good_store, edit) -> None:
    flips = edit.draw(st.lists(st.tuples(st.integers(0, len(good_store) - 1), st.integers(0, 255)), max_size=40))
    cut = edit.draw(st.none() | st.integers(0, len(good_store)))
    root = fresh(workdir)
    (root / STORE_FILE).write_bytes(mutate(good_store, (flips, cut, None)))
    exercise_store(root)


@FAST
@given(data=st.binary(max_size=600))
@example(data=b"")
@example(data=b"SQLite format 3\x00")
def test_store_file_arbitrary_bytes(workdir, data) -> None:
    root = fresh(workdir)
    (root / STORE_FILE).write_bytes(data)
    exercise_store(root)
