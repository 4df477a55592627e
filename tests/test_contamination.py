"""Contamination against a real (small) index: planted benchmark items land in the right bucket,
clean controls are never flagged, and every score equals a naive substring-scan oracle."""

import json
import random

import pytest

from retrieval import Index
from retrieval.contamination import BenchmarkRun, ContaminationConfig, Thresholds, html_report, markdown_bulletin
from retrieval.errors import InputError

SYLLABLES = ["ka", "lo", "mi", "ren", "tus", "vo", "qua", "zel", "shi", "pra", "nel", "dor", "fe", "gim", "hu"]


def _vocab(rng, n):
    return sorted({"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(n)})


def _sentence(rng, vocab, words):
    return " ".join(rng.choice(vocab) for _ in range(words)).capitalize() + "."


def _edit(rng, text, every):
    """Replace one character every `every` characters (a small edit per stretch)."""
    chars = list(text)
    for i in range(every // 2, len(chars), every):
        chars[i] = "#"
    return "".join(chars)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """An index of generated documents with benchmark items planted in some of them."""
    rng = random.Random(1234)
    vocab = _vocab(rng, 3000)
    tmp = tmp_path_factory.mktemp("contam")
    items = {f"item-{i}": _sentence(rng, vocab, 60) for i in range(16)}  # ~400+ chars each
    answers = {k: _sentence(rng, vocab, 15) for k in items}
    docs = [" ".join(_sentence(rng, vocab, rng.randint(5, 30)) for _ in range(rng.randint(3, 30))) for _ in range(300)]
    expect = {}

    def plant(text):
        d = rng.randrange(len(docs))
        cut = rng.randint(0, len(docs[d]))
        docs[d] = docs[d][:cut] + " " + text + " " + docs[d][cut:]

    ids = list(items)
    for k in ids[0:4]:  # verbatim question + answer
        plant(items[k] + "\n" + answers[k])
        expect[k] = "dirty"
    for k in ids[4:6]:  # verbatim question, answer absent: 60-word question vs 15-word answer -> dirty
        plant(items[k])
        expect[k] = "dirty"
    for k in ids[6:8]:  # one small edit in the middle of the question
        plant(_edit(rng, items[k], len(items[k])) + " " + answers[k])
        expect[k] = "dirty"
    for k in ids[8:11]:  # first half of the question only
        plant(items[k][: len(items[k]) // 2])
        expect[k] = "suspicious"
    for k in ids[11:13]:  # an edit every 40 characters: no 50-character window survives
        plant(_edit(rng, items[k] + " " + answers[k], 40))
        expect[k] = "clean"
    for k in ids[13:16]:  # not planted
        expect[k] = "clean"
    # clean controls: fresh items from the same vocabulary, never planted
    controls = {f"control-{i}": (_sentence(rng, vocab, 60), _sentence(rng, vocab, 15)) for i in range(40)}
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"doc{i}", "text": t}) + "\n" for i, t in enumerate(docs)),
                      encoding="utf-8")
    index = Index.build([corpus], tmp / "idx", id_field="id", dense=False, shard_size=120_000)
    bench = tmp / "bench.jsonl"
    rows = [{"task_id": k, "question": items[k], "answer": answers[k]} for k in ids]
    rows += [{"task_id": k, "question": q, "answer": a} for k, (q, a) in controls.items()]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"index": index, "docs": docs, "bench": bench, "expect": expect, "controls": set(controls), "tmp": tmp}


def _oracle(docs, texts, n, unit="chars"):
    """Windows found / windows, by scanning every document with Python's substring search."""
    from retrieval.windows import windows

    corpus = "\uffff".join(docs)  # no window contains the separator, so no match spans two documents
    total = found = 0
    for t in texts:
        data, starts, lengths = windows(t, n, unit)
        for s, ln in zip(starts.tolist(), lengths.tolist()):
            w = data[s:s + ln].decode("utf-8")
            total += 1
            found += w in corpus
    return total, found


def test_planted_items_land_in_their_buckets(planted):
    assert len(planted["index"].exact.shards) > 1  # matches are found across shards
    run = BenchmarkRun(planted["index"], planted["bench"], ["question", "answer"])
    results = {r.id: r for r in run}
    for k, bucket in planted["expect"].items():
        assert results[k].bucket == bucket, (k, results[k].score)
    for k in planted["controls"]:
        assert results[k].bucket == "clean" and results[k].score == 0.0, k
    s = run.summary.to_json()
    assert s["buckets"] == {"clean": 45, "suspicious": 3, "dirty": 8}
    assert s["thresholds"]["suspicious"] == 0.2 and s["thresholds"]["dirty"] == 0.8
    assert s["fields"] == ["question", "answer"]


def test_scores_equal_naive_scan(planted):
    docs = planted["docs"]
    rows = [json.loads(line) for line in planted["bench"].read_text().splitlines()]
    # maximal matches (the default) or every window counted on its own: the same counts
    for unit, n in (("chars", 50), ("tokens", 13), ("chars", 20), ("chars", 3)):
        for maximal in (True, False):
            cfg = ContaminationConfig(unit=unit, window=n, maximal_matches=maximal)
            _check_against_oracle(planted, rows, docs, cfg, unit, n)


def _check_against_oracle(planted, rows, docs, cfg, unit, n):
    results = {r.id: r for r in BenchmarkRun(planted["index"], planted["bench"], ["question", "answer"], config=cfg)}
    for row in rows[:16] + rows[-4:]:  # planted items and some controls
        total, found = _oracle(docs, [row["question"], row["answer"]], n, unit)
        r = results[row["task_id"]]
        assert (r.windows, r.found) == (total, found), (cfg, row["task_id"])


def test_matches_have_documents_offsets_snippets(planted):
    index, docs = planted["index"], planted["docs"]
    run = BenchmarkRun(index, planted["bench"], ["question", "answer"])
    for r in run:
        if r.bucket == "clean":
            assert r.matches == [] and r.matched_text is None
            continue
        assert r.matches and r.match_count >= 1, r.id
        needle = r.matched_text.encode()
        assert len(r.matched_text) >= 50
        assert r.match_count == sum(d.encode().count(needle) for d in docs)  # no overlapping repeats here
        for m in r.matches:
            doc = docs[m["doc_id"]].encode()
            assert doc[m["offset"]:m["offset"] + len(needle)] == needle
            assert m["ext_id"] == f"doc{m['doc_id']}"
            # the snippet is the match with context on both sides, cut from the document itself
            snip = m["snippet"].encode()
            a = snip.index(needle)
            assert doc[m["offset"] - a:m["offset"] - a + len(snip)] == snip
            assert a >= min(40, m["offset"]) and len(snip) - a - len(needle) >= min(40, len(doc) - m["offset"] - len(needle))
    worst = run.summary.worst()
    assert worst[0].bucket == "dirty" and worst[0].score == 1.0


def test_thresholds_are_configurable(planted):
    base = {r.id: r for r in BenchmarkRun(planted["index"], planted["bench"], ["question", "answer"])}
    partial = [k for k, b in planted["expect"].items() if b == "suspicious"]
    lowest = min(base[k].score for k in partial)
    cfg = ContaminationConfig(thresholds=Thresholds(0.01, lowest))
    results = {r.id: r for r in BenchmarkRun(planted["index"], planted["bench"], ["question", "answer"], config=cfg)}
    for k in partial:
        assert results[k].bucket == "dirty"
    for k, r in results.items():
        assert r.bucket == cfg.thresholds.bucket(r.score) and r.score == base[k].score


def test_fields_checked_separately_and_unscored_entries(planted, tmp_path):
    index = planted["index"]
    doc = max(planted["docs"], key=len)
    a, b = doc[:60], doc[60:120]
    rows = [
        {"id": "split", "q": a, "r": b},  # each field found on its own: 2 x 11 windows, all found
        {"id": "glued", "q": a + b[:1] + "\u2603" + b[1:]},  # the join itself is not in the corpus
        {"id": "empty", "q": "", "r": None},
        {"id": "short", "q": "tiny", "r": "too"},
        {"id": "missing"},
    ]
    p = tmp_path / "b.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = BenchmarkRun(index, p, ["q", "r"])
    res = {r.id: r for r in run}
    assert (res["split"].windows, res["split"].found, res["split"].bucket) == (22, 22, "dirty")
    assert res["split"].fields == {"q": [11, 11], "r": [11, 11]}
    assert res["glued"].windows == 72 and res["glued"].found == 12 + 10  # windows before / after the snowman
    assert res["empty"].bucket == "empty" and res["empty"].score is None
    assert res["short"].bucket == "too_short"
    assert res["missing"].bucket == "empty" and res["missing"].missing_fields == ["q", "r"]
    s = run.summary.to_json()
    assert (s["entries"], s["scored"], s["empty"], s["too_short"]) == (5, 2, 2, 1)


def test_all_empty_or_no_entries_is_an_error(planted, tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text(json.dumps({"id": 1, "q": ""}) + "\n" + json.dumps({"id": 2, "q": "  "[:0]}) + "\n")
    with pytest.raises(InputError, match="all 2 entries are empty"):
        list(BenchmarkRun(planted["index"], p, ["q"]))
    p.write_text("\n\n")
    with pytest.raises(InputError, match="has no entries"):
        list(BenchmarkRun(planted["index"], p, ["q"]))


def test_reports_state_thresholds_and_escape(planted, tmp_path):
    index, docs = planted["index"], planted["docs"]
    p = tmp_path / "x.jsonl"
    evil = "<script>alert(1)</script>"
    p.write_text(json.dumps({"id": evil, "q": max(docs, key=len)[:200]}) + "\n")
    run = BenchmarkRun(index, p, ["q"])
    list(run)
    run2 = BenchmarkRun(index, planted["bench"], ["question"])
    list(run2)
    page = html_report([run.summary, run2.summary], "test index")
    assert evil not in page and "&lt;script&gt;" in page
    assert "data:image/png;base64," in page and "score &lt; 0.2" in page and "score &gt;= 0.8" in page
    md = markdown_bulletin([run.summary, run2.summary], "test index")
    assert "| x | q | 1 | 1 | 0 | 0 | 1 | 100.0% |" in md
    assert "| bench | question | 56 |" in md
    assert "score < 0.2" in md


def test_benchmark_is_streamed(planted, tmp_path):
    """Results come out while the benchmark is still being written: a FIFO whose writer waits for
    the 100th result before writing the rest, so a reader that loads the file whole would hang."""
    import os
    import threading

    fifo = tmp_path / "stream.jsonl"
    os.mkfifo(fifo)
    text = max(planted["docs"], key=len)[:300]
    got_100 = threading.Event()
    waited = {}

    def writer():
        with open(fifo, "w", encoding="utf-8") as f:
            for i in range(400):
                f.write(json.dumps({"id": i, "q": text if i % 2 else text[::-1]}) + "\n")
            f.flush()
            waited["ok"] = got_100.wait(timeout=60)
            for i in range(400, 800):
                f.write(json.dumps({"id": i, "q": text}) + "\n")

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    cfg = ContaminationConfig(batch_bytes=8 * 1024)
    run = BenchmarkRun(planted["index"], fifo, ["q"], config=cfg)
    n = 0
    for r in run:
        n += 1
        if n == 100:
            got_100.set()
        assert r.id == str(n - 1)
        assert r.bucket == ("dirty" if n - 1 >= 400 or (n - 1) % 2 else "clean")
    t.join(timeout=60)
    assert waited.get("ok") is True and n == 800
    assert run.summary.counts["dirty"] == 600


def test_locate_through_prefix_equals_find(planted):
    """The scorer locates a long match through its first window when both occur equally often
    (ExactIndex.locate_in); with any prefix, frequent or not, its occurrences equal Index.find's."""
    index, docs = planted["index"], planted["docs"]
    rng = random.Random(7)
    shortcut = 0
    for _ in range(60):
        doc = rng.choice([d for d in docs if len(d) > 300]).encode()
        a = rng.randrange(len(doc) - 200)
        query = doc[a:a + rng.choice([40, 120, 200])]
        prefix = query[: rng.choice([3, 8, 20])]
        counts = index.exact.shard_counts(query)
        shortcut += all(int(sh.count(prefix)) == c for sh, c in zip(index.exact.shards, counts) if c)
        got = index.exact.locate_in(query, counts, 5, prefix)
        want = index.find(query, offset=0, limit=5)
        assert got == ([int(x) for x in want[0]], [int(x) for x in want[1]])
    assert 0 < shortcut < 60  # both paths taken
