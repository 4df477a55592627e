"""rtv query."""

from __future__ import annotations

import click

from .common import emit, open_index, output_options


@click.command()
@click.argument("index_dir", type=click.Path())
@click.argument("text", nargs=-1, required=True)
@click.option("--mode", type=click.Choice(["hybrid", "dense", "lexical", "exact"]), default="hybrid", show_default=True)
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of passages to return.")
@click.option("--rerank/--no-rerank", default=None, help="Cross-encoder reranking of the fused top-n (hybrid default: on).")
@click.option("--reranker", default=None, help="Cross-encoder model path or name.")
@click.option("--fusion", type=click.Choice(["rrf", "weighted"]), default="rrf", show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@output_options
def query(index_dir, text, mode, k, rerank, reranker, fusion, device, as_json):
    """Search passages for TEXT (several TEXT arguments are separate queries)."""
    from retrieval.errors import InputError

    if k <= 0:
        raise InputError(f"-k {k}: must be >= 1")
    idx = open_index(index_dir, device=device)
    options = {}
    if mode != "dense" or rerank or reranker:
        options = {"rerank": rerank, "reranker": reranker, "fusion": fusion}
    results = idx.search_batch(list(text), k=k, mode=mode, **options)
    for q, hits in zip(text, results):
        for rank, hit in enumerate(hits, start=1):
            obj = {"query": q, **hit.to_json(rank)}
            emit(obj, as_json, f"{rank}\t{hit.score:.4f}\t{hit.ext_id}\t{hit.text[:100]!r}")
