"""rtv query."""

from __future__ import annotations

import click

from retrieval.options import DEFAULT_FUSION, DEFAULT_K, DEFAULT_MODE, FUSIONS, MODES

from .common import emit, open_index, output_options, where_option


@click.command()
@click.argument("index_dir", type=click.Path())
@click.argument("text", nargs=-1, required=True)
@click.option("--mode", type=click.Choice(MODES), default=DEFAULT_MODE, show_default=True)
@click.option("-k", "k", type=int, default=None,
              help=f"Number of passages to return. Default: {DEFAULT_K}, or all of them when the index holds fewer "
                   "(a -k given larger than the index is an error).")
@click.option("--rerank/--no-rerank", default=None,
              help="Cross-encoder reranking of the fused top-n. Default: hybrid reranks when the default "
                   "cross-encoder is on disk (a notice when it is not); --rerank must load one.")
@click.option("--reranker", default=None, help="Cross-encoder model directory or hub id (implies --rerank).")
@click.option("--fusion", type=click.Choice(FUSIONS), default=DEFAULT_FUSION, show_default=True,
              help="How hybrid combines its stages: weighted normalised scores, or reciprocal rank fusion.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@where_option
@output_options
def query(index_dir, text, mode, k, rerank, reranker, fusion, device, where, as_json):
    """Search passages for TEXT (several TEXT arguments are separate queries)."""
    from retrieval.options import check_options

    check_options(mode, k, fusion)
    idx = open_index(index_dir, device=device)
    results = idx.search_batch(list(text), k=k, mode=mode, rerank="auto" if rerank is None else rerank,
                               reranker=reranker, fusion=fusion, device=device, where=where)
    for q, hits in zip(text, results):
        for rank, hit in enumerate(hits, start=1):
            obj = {"query": q, **hit.to_json(rank)}
            emit(obj, as_json, f"{rank}\t{hit.score:.4f}\t{hit.ext_id}\t{hit.text[:100]!r}")
