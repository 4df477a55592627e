"""Fusion against ranx's RRF / weighted-sum implementations and hand-computed values."""

import random

import pytest

from retrieval.errors import InputError
from retrieval.hybrid.fusion import fuse, rrf, weighted


def test_rrf_hand_computed():
    lists = {"dense": [(1, 0.9), (2, 0.8), (3, 0.7)], "lexical": [(3, 12.0), (4, 5.0)]}
    out = rrf(lists, k=60)
    scores = {c.passage_id: c.score for c in out}
    assert scores[3] == pytest.approx(1 / 63 + 1 / 61)
    assert scores[1] == pytest.approx(1 / 61)
    assert scores[2] == pytest.approx(1 / 62) and scores[4] == pytest.approx(1 / 62)
    assert [c.passage_id for c in out] == [3, 1, 2, 4]  # tie 2/4 broken by best rank, then id
    assert out[0].stages == {"dense": {"rank": 3, "score": 0.7}, "lexical": {"rank": 1, "score": 12.0}}


def test_padding_and_duplicates_ignored():
    out = rrf({"dense": [(5, 1.0), (-1, 0.0), (5, 0.5), (6, 0.4)]})
    assert [c.passage_id for c in out] == [5, 6]
    assert out[1].stages["dense"]["rank"] == 2


def _random_lists(seed):
    rng = random.Random(seed)
    lists = {}
    for stage in ("dense", "lexical", "exact")[: rng.randint(2, 3)]:
        ids = rng.sample(range(40), rng.randint(2, 25))
        scores = sorted((rng.uniform(-5, 5) for _ in ids), reverse=True)
        lists[stage] = list(zip(ids, scores))
    return lists


def _ranx_runs(lists):
    from ranx import Run

    return [Run({"q": {str(p): s for p, s in ranked}}, name=stage) for stage, ranked in lists.items()]


@pytest.mark.parametrize("seed", range(8))
def test_rrf_matches_ranx(seed):
    from ranx import fuse as ranx_fuse

    lists = _random_lists(seed)
    ours = {c.passage_id: c.score for c in fuse(lists, "rrf", k=60)}
    theirs = ranx_fuse(_ranx_runs(lists), method="rrf", params={"k": 60})["q"]
    assert set(ours) == {int(p) for p in theirs}
    for p, s in theirs.items():
        assert ours[int(p)] == pytest.approx(s)


@pytest.mark.parametrize("seed", range(8))
def test_weighted_matches_ranx_wsum(seed):
    from ranx import fuse as ranx_fuse

    lists = _random_lists(seed)
    weights = {s: w for s, w in zip(lists, (0.5, 0.3, 0.2))}
    ours = {c.passage_id: c.score for c in weighted(lists, weights)}
    theirs = ranx_fuse(_ranx_runs(lists), norm="min-max", method="wsum",
                       params={"weights": [weights[s] for s in lists]})["q"]
    for p, s in theirs.items():
        assert ours[int(p)] == pytest.approx(s, abs=1e-9)


def test_weights_change_rrf_order():
    lists = {"dense": [(1, 1.0), (2, 0.5)], "lexical": [(2, 3.0), (1, 1.0)]}
    assert fuse(lists, "rrf", weights={"dense": 2.0, "lexical": 1.0})[0].passage_id == 1
    assert fuse(lists, "rrf", weights={"dense": 1.0, "lexical": 2.0})[0].passage_id == 2


def test_bad_arguments():
    with pytest.raises(InputError, match="--fusion"):
        fuse({"dense": []}, "max")
    with pytest.raises(InputError, match="must be >= 0"):
        fuse({"dense": [(1, 1.0)]}, "weighted", weights={"dense": -1})
    assert fuse({}, "rrf") == []
