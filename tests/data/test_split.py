from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tfuq.data.split import (
    EXCLUDED,
    INFERENCE,
    PHASES,
    TRAINING,
    VALIDATION,
    load_or_create_split,
    make_split,
    read_split,
    subjects_in_phase,
    write_split,
)
from tfuq.errors import UserError

IDS = [f"sub{i:03d}" for i in range(40)]


def _split(ids, v=0.2, i=0.1, seed=0):
    return make_split(ids, validation_fraction=v, inference_fraction=i, seed=seed)


def test_phase_names_are_niftynet_spelling():
    # NiftyNet's three phases, plus tfuq's held-out Calibration (only ever listed in a split file)
    assert PHASES == ("Training", "Validation", "Calibration", "Inference")
    assert tuple(p for p in PHASES if p != "Calibration") == (TRAINING, VALIDATION, INFERENCE)


def test_deterministic_and_independent_of_order():
    a = _split(IDS, seed=3)
    b = _split(list(reversed(IDS)), seed=3)
    assert a == b
    assert list(a) == sorted(IDS)
    assert _split(IDS, seed=4) != a


@pytest.mark.parametrize(
    ("n", "v", "i", "expected"),
    [
        (40, 0.2, 0.1, (28, 8, 4)),
        (10, 0.25, 0.0, (7, 3, 0)),  # 2.5 rounds up
        (10, 0.0, 0.0, (10, 0, 0)),
        (4, 0.5, 0.25, (1, 2, 1)),
        (3, 0.1, 0.1, (1, 1, 1)),  # positive fractions get one subject each
        (2, 0.1, 0.1, (1, 0, 1)),  # training keeps one; validation gives way first
        (2, 0.0, 0.5, (1, 0, 1)),
        (1, 0.3, 0.3, (1, 0, 0)),
        (0, 0.3, 0.3, (0, 0, 0)),
    ],
)
def test_counts(n, v, i, expected):
    split = _split(IDS[:n], v=v, i=i)
    counts = Counter(split.values())
    assert (counts[TRAINING], counts[VALIDATION], counts[INFERENCE]) == expected
    assert sorted(split) == sorted(IDS[:n])


def test_adding_a_subject_moves_at_most_two_others():
    for seed in range(10):
        before = _split(IDS, seed=seed)
        after = _split([*IDS, "late_subject"], seed=seed)
        moved = [s for s in IDS if before[s] != after[s]]
        assert len(moved) <= 2


@pytest.mark.parametrize(
    ("v", "i", "match"),
    [
        (-0.1, 0.1, "validation_fraction"),
        (0.1, 1.0, "inference_fraction"),
        (0.6, 0.4, "< 1"),
        ("0.1", 0.1, "validation"),
    ],
)
def test_bad_fractions(v, i, match):
    with pytest.raises(ValueError, match=match):
        _split(IDS, v=v, i=i)


def test_duplicate_ids():
    with pytest.raises(ValueError, match="sub001"):
        _split(["sub001", "sub002", "sub001"])


def test_create_then_read_unchanged(tmp_path, caplog):
    path = tmp_path / "split.csv"
    first = load_or_create_split(path, IDS, validation_fraction=0.2, inference_fraction=0.1, seed=1)
    assert first == _split(IDS, seed=1)
    text = path.read_text()
    assert text.splitlines()[0] == f"sub000,{first['sub000']}"
    assert len(text.splitlines()) == len(IDS)
    assert [p.name for p in tmp_path.iterdir()] == ["split.csv"]
    # Different fractions and seed: the file wins.
    again = load_or_create_split(path, IDS, validation_fraction=0.5, inference_fraction=0.0, seed=99)
    assert again == first
    # A new subject, or a subject gone: refused in one line naming them, the file untouched.
    with pytest.raises(
        UserError, match=r"does not list 1 subject\(s\) found in the data \(sub999\);.*Excluded"
    ):
        load_or_create_split(path, [*IDS, "sub999"], validation_fraction=0.2, inference_fraction=0.1, seed=1)
    with pytest.raises(
        UserError, match=r"lists 35 subject\(s\) with no files in the input sections \(sub005, "
    ):
        load_or_create_split(path, IDS[:5], validation_fraction=0.2, inference_fraction=0.1, seed=1)
    assert path.read_text() == text
    # Subjects listed as Excluded are left out on purpose.
    path.write_text(text + "sub999,excluded\n")
    grown = load_or_create_split(
        path, [*IDS, "sub999"], validation_fraction=0.2, inference_fraction=0.1, seed=1
    )
    assert grown == first


def test_read_niftynet_lowercase_and_blank_lines(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("subject_001,training\n\nsubject_002, inference\nsubject_003,VALIDATION\n")
    assert read_split(path) == {"subject_001": TRAINING, "subject_002": INFERENCE, "subject_003": VALIDATION}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (
            "a,Training\nb,Testing\n",
            r"split\.csv:2: unknown phase 'Testing'; expected one of Training, .*, Inference, Excluded\.",
        ),
        ("a,Training\nb\n", r"split\.csv:2: expected 'subject_id,Phase'"),
        ("a,Training,x\n", r"split\.csv:1: expected"),
        ("a,Training\n\na,Inference\n", r"split\.csv:3: subject 'a' already listed on line 1"),
    ],
)
def test_read_errors(tmp_path, content, match):
    path = tmp_path / "split.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=match) as info:
        load_or_create_split(path, ["a", "b"], validation_fraction=0.0, inference_fraction=0.0, seed=0)
    assert "\n" not in str(info.value)


def test_read_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_split(tmp_path / "none.csv")


def test_write_split_checks(tmp_path):
    path = tmp_path / "s.csv"
    write_split(path, {"b": INFERENCE, "a": TRAINING})
    assert path.read_text() == "a,Training\nb,Inference\n"
    with pytest.raises(UserError, match="already exists"):
        write_split(path, {"a": TRAINING})
    with pytest.raises(ValueError, match="Testing"):
        write_split(tmp_path / "t.csv", {"a": "Testing"})
    write_split(tmp_path / "x.csv", {"a": TRAINING, "b": EXCLUDED})
    assert read_split(tmp_path / "x.csv") == {"a": TRAINING, "b": EXCLUDED}
    with pytest.raises(ValueError, match="commas"):
        write_split(tmp_path / "t.csv", {"a,b": TRAINING})


def test_subjects_in_phase():
    split = {"c": TRAINING, "a": TRAINING, "b": INFERENCE}
    assert subjects_in_phase(split, TRAINING) == ["a", "c"]
    assert subjects_in_phase(split, VALIDATION) == []
    with pytest.raises(ValueError, match="training"):
        subjects_in_phase(split, "training")


_IDS = st.lists(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,8}", fullmatch=True), max_size=40, unique=True)
_FRACTIONS = st.tuples(st.floats(0.0, 0.95), st.floats(0.0, 0.95)).filter(lambda f: f[0] + f[1] < 1.0)


@settings(max_examples=200, deadline=None)
@given(ids=_IDS, fractions=_FRACTIONS, seed=st.integers(0, 2**31), data=st.data())
def test_every_subject_once_fractions_respected_and_deterministic(ids, fractions, seed, data):
    v, i = fractions
    split = _split(ids, v=v, i=i, seed=seed)
    assert sorted(split) == sorted(ids) and set(split.values()) <= {TRAINING, VALIDATION, INFERENCE}
    counts = Counter(split.values())
    n = len(ids)
    if n:
        assert counts[TRAINING] >= 1  # training keeps a subject
    for fraction, phase in ((v, VALIDATION), (i, INFERENCE)):
        if fraction == 0:
            assert counts[phase] == 0
        elif n >= 3:
            assert counts[phase] >= 1  # a positive fraction gets a subject when there are enough
        # the count is the rounded fraction, unless a phase had to give way or take the minimum of one
        assert counts[phase] <= max(1, math.floor(fraction * n + 0.5))
    if n and max(1, round(v * n)) + max(1, round(i * n)) <= n - 1 and min(v * n, i * n) >= 1:
        assert abs(counts[VALIDATION] - v * n) <= 0.5 and abs(counts[INFERENCE] - i * n) <= 0.5
    shuffled = data.draw(st.permutations(ids))
    assert _split(shuffled, v=v, i=i, seed=seed) == split  # order does not matter


@settings(max_examples=200, deadline=None)
@given(ids=_IDS, fractions=_FRACTIONS, seed=st.integers(0, 2**31))
def test_adding_a_subject_moves_few_others(ids, fractions, seed):
    v, i = fractions
    new = "zz-new"
    assume(new not in ids)
    before = _split(ids, v=v, i=i, seed=seed)
    after = _split([*ids, new], v=v, i=i, seed=seed)
    moved = [s for s in ids if before[s] != after[s]]
    # the new subject shifts the ranks after it by one and each phase count changes by at most one, so
    # only subjects next to the two phase boundaries change phase: at most three (three happens, e.g.
    # ids 0, 1, 2, 4, 00 with fractions 0.25, 0.25 and seed 0 move three)
    assert len(moved) <= 3, (moved, before, after)
