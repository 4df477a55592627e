"""The build pipeline (retrieval.build): the shard plan, the per-shard step and its runner seam."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval import Index
from retrieval.build import BuildSettings, build_index, plan_shards
from retrieval.corpus import Document
from retrieval.errors import InputError

texts = st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(texts, st.integers(1, 120))
def test_plan_shards_keeps_order_and_respects_the_size(docs, shard_size):
    shards = list(plan_shards((Document(str(i), t, "src") for i, t in enumerate(docs)), shard_size))
    joined = b"".join(bytes(s.text) for s in shards)
    assert joined == b"".join(t.encode() + b"\xff" for t in docs)  # every document once, in order
    assert [d["ext_id"] for s in shards for d in s.docs] == [str(i) for i in range(len(docs))]
    first = 0
    for number, s in enumerate(shards):
        assert s.number == number and s.first_doc == first and s.docs
        assert len(s.text) <= shard_size or len(s.docs) == 1  # only a lone large document overflows
        assert [d["length"] for d in s.docs] == [len(docs[d["id"]].encode()) for d in s.docs]
        first += len(s.docs)


def test_duplicate_ids_from_a_field_are_refused_and_file_line_ids_are_not_checked():
    dup = [Document("a", "x", "f.jsonl", id_field="id"), Document("a", "y", "f.jsonl", id_field="id")]
    with pytest.raises(InputError, match="duplicate id 'a' in field 'id'"):
        list(plan_shards(dup, 100))
    assert len(list(plan_shards([Document("f:1", "x", "f"), Document("f:1", "y", "f")], 100))) == 1


def _corpus(tmp_path, n=40):
    docs = [{"_id": f"d{i}", "text": f"document {i} " + "lorem ipsum dolor sit amet " * (i % 7 + 1), "n": i}
            for i in range(n)]
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return src, docs


def _passages(index):
    return [(r["doc_id"], r["start"], r["end"], r["text"]) for r in index.iter_passages()]


def test_multi_shard_build_has_the_single_shard_answers(tmp_path):
    """Shards of ~300 bytes (many) vs one shard: the same documents, passages (ids in document
    order), texts and counts; each passage's text is its document's bytes [start, end)."""
    src, docs = _corpus(tmp_path)
    one = Index.build([src], tmp_path / "one", dense=False)
    many = Index.build([src], tmp_path / "many", dense=False, shard_size=300)
    try:
        assert len(many.manifest["exact"]["shards"]) > 5 and len(one.manifest["exact"]["shards"]) == 1
        assert _passages(many) == _passages(one)
        by_id = {d["_id"]: d["text"].encode() for d in docs}
        ext = {r["id"]: r["ext_id"] for r in many.store.documents(range(len(docs)))}
        assert [ext[i] for i in range(len(docs))] == [d["_id"] for d in docs]  # ids from the corpus's _id
        assert many.manifest["corpus"]["id_field"] == "_id"  # the field found, recorded
        doc_ids = [p[0] for p in _passages(many)]
        assert doc_ids == sorted(doc_ids)
        for doc, start, end, text in _passages(many):
            assert text.encode() == by_id[ext[doc]][start:end]
            assert many.extract(doc).encode() == by_id[ext[doc]]
        for pattern in ["lorem", "document 3", "amet lorem", "dolor sit amet dolor"]:
            naive = sum(d["text"].count(pattern) for d in docs)
            assert many.count(pattern) == one.count(pattern) == naive
    finally:
        one.close()
        many.close()


def test_a_concurrent_runner_gives_the_same_index(tmp_path):
    """The runner seam: shards built by a thread pool (results collected in shard order) give
    byte-identical shard files and the same store as the serial runner."""
    src, _ = _corpus(tmp_path)

    def pool_runner(step, shards):
        with ThreadPoolExecutor(3) as pool:
            yield from pool.map(step, shards)

    s = BuildSettings(dense=False, shard_size=300)
    build_index([src], tmp_path / "serial", s)
    build_index([src], tmp_path / "pool", BuildSettings(dense=False, shard_size=300), runner=pool_runner)
    a, b = Index.open(tmp_path / "serial"), Index.open(tmp_path / "pool")
    try:
        files = sorted(p.name for p in (a.root / "exact").iterdir())
        assert files == sorted(p.name for p in (b.root / "exact").iterdir()) and len(files) > 5
        for f in files:
            assert (a.root / "exact" / f).read_bytes() == (b.root / "exact" / f).read_bytes()
        assert _passages(a) == _passages(b)
        assert a.manifest["exact"] == b.manifest["exact"]
    finally:
        a.close()
        b.close()


def test_bad_settings_fail_before_reading(tmp_path):
    for kwargs, message in [({"shard_size": 0}, "--shard-size 0"), ({"sa_sample": 0}, "--sa-sample 0"),
                            ({"errors": "ignore"}, "--errors 'ignore'"),
                            ({"passage_tokens": 16, "passage_overlap": 16}, "overlap")]:
        with pytest.raises(InputError, match=message):
            build_index([tmp_path / "does-not-exist.jsonl"], tmp_path / "idx", BuildSettings(dense=False, **kwargs))
        assert not (tmp_path / "idx").exists()
    with pytest.raises(TypeError, match="unexpected arguments"):
        Index.build([tmp_path / "x.jsonl"], tmp_path / "idx", dense=False, shardsize=5)
