"""The text part (issue 8): documents zstd-compressed in blocks beside the FM-index. Its answers are
the original documents' bytes (the oracle: the corpus itself) and the FM-index's, for whole
documents and random ranges (cut inside multi-byte characters too), empty documents, documents
larger than a block; rtv add / delete / compact keep it equal to a fresh build's; damage is a clear
error naming the file; `rtv info` sizes are the files on disk; an index without it is unchanged."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from retrieval import Index, text_store
from retrieval.errors import IndexFormatError, InputError
from retrieval.text_store import TextStore, write_text_store
from retrieval.update import add, compact, delete

ALPHABET = "abc déf 漢字 🙂\n"


def random_docs(seed: int, n: int, sizes=(1, 3, 40, 700, 5000, 40_000)) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.choice(sizes))) for _ in range(n)]


def write_jsonl(path: Path, docs: list[str], first: int = 0) -> Path:
    path.write_text("".join(json.dumps({"id": f"d{first + i}", "text": t}, ensure_ascii=False) + "\n"
                            for i, t in enumerate(docs)), encoding="utf-8")
    return path


def random_ranges(rng: random.Random, lengths: list[int], n: int) -> tuple[list[int], list[int], list[int]]:
    """Ranges anywhere in the documents (byte offsets, so many cut a character in two), some empty,
    some running past the document's end (clipped), some whole documents."""
    docs, starts, ends = [], [], []
    for _ in range(n):
        d = rng.randrange(len(lengths))
        a = rng.randint(0, lengths[d])
        b = a + rng.choice([0, 1, 2, 3, 200, 1200, 20_000, 1 << 40]) if rng.random() < 0.9 else lengths[d]
        docs.append(d)
        starts.append(a if b != lengths[d] or rng.random() < 0.5 else 0)
        ends.append(b)
    return docs, starts, ends


# -- the store file against the corpus and the FM-index, below the index layer ----------------------
@pytest.mark.parametrize("block_size,dict_size", [(16 << 10, text_store.DICT_SIZE), (512, 0), (100, 4096)])
def test_store_equals_documents_and_fm_index(tmp_path, block_size, dict_size, monkeypatch):
    from retrieval import _fm_index

    monkeypatch.setattr(text_store, "MIN_DICT_TEXT", 1024)  # a dictionary even for this small shard
    docs = [d.encode() for d in random_docs(1, 60)] + [b"", b"x", b""]  # empty documents too
    text = bytearray(b"".join(d + b"\xff" for d in docs))
    lengths = [len(d) for d in docs]
    _fm_index.build_shard(text, str(tmp_path / "s.fmi"), 4, 8, None)
    shard = _fm_index.Shard(str(tmp_path / "s.fmi"), True)
    assert list(shard.doc_lengths()) == lengths
    entry = write_text_store(text, lengths, tmp_path, "t.zst", block_size=block_size, dict_size=dict_size)
    assert entry["blocks"] == -(-sum(lengths) // block_size) and entry["bytes"] == (tmp_path / "t.zst").stat().st_size
    store = TextStore(tmp_path / "t.zst", np.asarray(lengths))
    assert max(lengths) > block_size  # a document spans several blocks
    everything = store.ranges(list(range(len(docs))), [0] * len(docs), [1 << 50] * len(docs))
    assert everything == docs
    rng = random.Random(block_size)
    for batch in (1, 7, 400):  # one block; a few; many (the multi-threaded path)
        d, a, b = random_ranges(rng, lengths, batch)
        want = [docs[i][s:e] for i, s, e in zip(d, a, b)]
        assert store.ranges(d, a, b) == want
        blob, off = shard.extract_ranges(np.array(d), np.array(a), np.array(b))
        assert [blob[off[i]:off[i + 1]] for i in range(len(d))] == want
    with pytest.raises(IndexError, match="beyond the end of document 1"):
        store.ranges([1], [lengths[1] + 1], [lengths[1] + 2])
    with pytest.raises(IndexError, match="beyond the end"):  # the FM-index says the same
        shard.extract_ranges(np.array([1]), np.array([lengths[1] + 1]), np.array([lengths[1] + 2]))


def test_store_is_deterministic(tmp_path):
    docs = [d.encode() for d in random_docs(2, 600, sizes=(500, 3000))]
    text = bytearray(b"".join(d + b"\xff" for d in docs))
    a = write_text_store(text, [len(d) for d in docs], tmp_path, "a.zst")
    b = write_text_store(text, [len(d) for d in docs], tmp_path, "b.zst")
    assert a["dict_bytes"] > 0  # enough text for a trained dictionary
    assert (tmp_path / "a.zst").read_bytes() == (tmp_path / "b.zst").read_bytes()


# -- through the index ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text")
    docs = random_docs(3, 80)
    src = write_jsonl(tmp / "c.jsonl", docs)
    with_text = Index.build([src], tmp / "with", parts="exact,lexical,text", shard_size=60_000, sa_sample=4,
                            isa_sample=8, device="cpu")
    without = Index.build([src], tmp / "without", parts="exact,lexical", shard_size=60_000, sa_sample=4,
                          isa_sample=8, device="cpu")
    return docs, with_text, without


def test_index_answers_equal_documents_and_the_fm_index(built):
    docs, idx, plain = built
    assert idx.parts == ("exact", "lexical", "text") and len(idx.exact.shards) > 1
    assert all(t is not None for t in idx.exact.texts) and all(t is None for t in plain.exact.texts)
    for d, text in enumerate(docs):
        assert idx.extract(d) == text == plain.extract(d)
    rng = random.Random(5)
    lengths = [len(t.encode()) for t in docs]
    for _ in range(200):
        d, a, b = (x[0] for x in random_ranges(rng, lengths, 1))
        width = min(b, 1 << 30) - a
        assert idx.exact.snippet(d, a, width) == docs[d].encode()[a:a + width] == plain.exact.snippet(d, a, width)
        assert idx.snippet(d, a, width) == plain.snippet(d, a, width)
    d, a, b = random_ranges(rng, lengths, 500)  # across shards, in one call
    assert idx.exact.extract_ranges(d, a, b) == [docs[i].encode()[s:e] for i, s, e in zip(d, a, b)] \
        == plain.exact.extract_ranges(d, a, b)
    ids = list(range(idx.n_passages))
    assert [p["text"] for p in idx.passages(ids)] == [p["text"] for p in plain.passages(ids)]
    hits = idx.search("abc déf", k=5, mode="lexical", rerank=False)
    assert hits and all(h.text == docs[h.doc_id].encode()[h.start:h.end].decode() for h in hits)
    with pytest.raises(InputError, match="beyond the end of document"):
        idx.exact.extract_ranges([0], [lengths[0] + 1], [lengths[0] + 5])


def test_info_sizes_are_the_files_on_disk(built):
    _, idx, plain = built
    for index, want in ((idx, {"exact", "lexical", "passages", "text"}), (plain, {"exact", "lexical", "passages"})):
        info = index.info()
        files = [f for f in index.root.rglob("*") if f.is_file()]
        assert set(info["parts"]) == want
        assert sum(p["bytes"] for p in info["parts"].values()) == info["index_bytes"] == sum(f.stat().st_size for f in files)
    text_files = sorted(f for f in idx.root.rglob("*.zst"))
    assert len(text_files) == len(idx.exact.shards)
    assert idx.info()["parts"]["text"]["bytes"] == sum(f.stat().st_size for f in text_files)
    assert not list(plain.root.rglob("*.zst")) and not (plain.root / "text").exists()  # no store without the part


def test_add_delete_compact_equal_a_fresh_build(tmp_path):
    settings = dict(parts="exact,lexical,text", shard_size=50_000, sa_sample=4, isa_sample=8, device="cpu")
    first, second = random_docs(10, 30), random_docs(11, 25)
    path = tmp_path / "idx"
    Index.build([write_jsonl(tmp_path / "a.jsonl", first)], path, **settings).close()
    add(path, [write_jsonl(tmp_path / "b.jsonl", second, first=len(first))])
    dropped = {"d3", "d31", "d40"}
    delete(path, sorted(dropped))
    live = [(f"d{i}", t) for i, t in enumerate(first + second) if f"d{i}" not in dropped]

    def texts_by_id(index):
        flt = index.doc_filter()
        ids = range(index.n_documents) if flt is None else flt.allowed_ids.tolist()
        ext = {r["id"]: r["ext_id"] for r in index.store.documents(list(ids))}
        return [(ext[d], index.extract(d)) for d in ids]

    def passages_by_id(index):
        ext = {r["id"]: r["ext_id"] for r in index.store.documents(list(range(index.n_documents)))}
        return sorted((ext[p["doc_id"]], p["start"], p["text"]) for p in index.iter_passages() if ext[p["doc_id"]] not in dropped)

    src = tmp_path / "fresh.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in live), encoding="utf-8")
    fresh = Index.build([src], tmp_path / "fresh", **settings)
    changed = Index.open(path)
    assert all(t is not None for t in changed.exact.texts) and len(changed.exact.shards) > len(fresh.exact.shards) - 1
    assert texts_by_id(changed) == texts_by_id(fresh) == live
    assert passages_by_id(changed) == passages_by_id(fresh)
    compact(path)
    compacted = Index.open(path)
    assert texts_by_id(compacted) == live
    assert all(t is not None for t in compacted.exact.texts)
    for a, b in zip(compacted.manifest["exact"]["shards"], fresh.manifest["exact"]["shards"]):
        assert (compacted.root / a["text"]["file"]).read_bytes() == (fresh.root / b["text"]["file"]).read_bytes()


# -- damage --------------------------------------------------------------------------------------------
def _copy_index(built, tmp_path) -> Path:
    import shutil

    _, idx, _ = built
    dst = tmp_path / "copy"
    shutil.copytree(idx.path, dst)
    return dst


def _store_path(path: Path) -> Path:
    idx = Index.open(path, verify=False)
    rel = idx.manifest["exact"]["shards"][0]["text"]["file"]
    idx.close()
    return idx.root / rel


def test_a_corrupt_block_is_an_error_naming_the_file(built, tmp_path):
    path = _copy_index(built, tmp_path)
    store = _store_path(path)
    data = bytearray(store.read_bytes())
    data[-40] ^= 0x5A  # inside the last block's frame
    store.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=f"{store}: corrupted"):  # its checksum, when verified
        Index.open(path, verify=True)
    idx = Index.open(path, verify=False)
    n0 = idx.exact.shards[0].n_docs
    with pytest.raises(IndexFormatError, match=rf"{store}: a corrupt block .*rebuild the index"):
        for d in range(n0):
            idx.extract(d)
    from rtv_cli.main import cli

    result = CliRunner().invoke(cli, ["extract", str(path), *[str(d) for d in range(n0)]])
    assert result.exit_code == 1 and str(store) in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("damage,message", [
    ("magic", "not an rtv text-part file"),
    ("n_docs", "holds .* documents, its FM-index shard"),
    ("offsets", "its block offsets do not cover its data"),
    ("doc_starts", "its documents' lengths differ"),
    ("truncate", "20 bytes, manifest says"),  # the manifest's sizes catch a cut file first
])
def test_a_damaged_store_header_is_an_error_naming_the_file(built, tmp_path, damage, message):
    path = _copy_index(built, tmp_path)
    store = _store_path(path)
    data = bytearray(store.read_bytes())
    header = text_store._HEADER.size
    if damage == "magic":
        data[0:4] = b"XXXX"
    elif damage == "n_docs":
        data[16:24] = (int.from_bytes(data[16:24], "little") + 1).to_bytes(8, "little")
    elif damage == "offsets":
        n_docs = int.from_bytes(data[16:24], "little")
        at = header + 8 * (n_docs + 1) + 8  # the second block offset
        data[at:at + 8] = (1 << 40).to_bytes(8, "little")
    elif damage == "doc_starts":
        data[header + 8:header + 16] = (int.from_bytes(data[header + 8:header + 16], "little") + 1).to_bytes(8, "little")
    else:
        data = data[:20]
    store.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=rf"{store}: {message}"):
        Index.open(path, verify=False)


def test_a_short_store_file_is_an_error_naming_it(tmp_path):
    write_text_store(bytearray(b"abc\xff"), [3], tmp_path, "t.zst")
    data = (tmp_path / "t.zst").read_bytes()
    for cut in (10, text_store._HEADER.size + 4, len(data) - 1):
        (tmp_path / "c.zst").write_bytes(data[:cut])
        with pytest.raises(IndexFormatError, match=f"{tmp_path / 'c.zst'}: .*(shorter than its header|tables need|offsets)"):
            TextStore(tmp_path / "c.zst", np.array([3]))
    assert TextStore(tmp_path / "t.zst", np.array([3])).ranges([0], [1], [9]) == [b"bc"]


def test_manifest_without_the_store_file_is_refused(built, tmp_path):
    from retrieval.manifest import read_manifest, write_manifest

    path = _copy_index(built, tmp_path)
    idx = Index.open(path, verify=False)
    root, m = idx.root, dict(idx.manifest)
    idx.close()
    m["exact"] = dict(m["exact"])
    m["exact"]["shards"] = [{k: v for k, v in s.items() if k != "text"} for s in m["exact"]["shards"]]
    write_manifest(root, m)
    with pytest.raises(IndexFormatError, match="shard 0 has no text-part file"):
        read_manifest(root)


def test_parts_error_lists_text(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", ["x"])
    with pytest.raises(InputError, match="use a comma-separated list of exact, lexical, dense, text"):
        Index.build([src], tmp_path / "a", parts="exact,zstd")
    idx = Index.build([src], tmp_path / "b", parts="exact,text")  # no passages, the text part alone
    assert idx.parts == ("exact", "text") and idx.extract(0) == "x"
