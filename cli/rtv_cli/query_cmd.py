"""rtv query."""

from __future__ import annotations

import click

from .common import emit, open_index, output_options


@click.command()
@click.argument("index_dir", type=click.Path())
@click.argument("text", nargs=-1, required=True)
@click.option("--mode", type=click.Choice(["hybrid", "dense", "lexical", "exact"]), default="hybrid", show_default=True)
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of passages to return.")
@click.option("--rerank/--no-rerank", default=None, help="Cross-encoder reranking of the fused top-n. Default for hybrid: on when a cross-encoder can be loaded, else off with a notice.")
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
    if rerank is None:
        rerank, reranker = _default_rerank(mode, reranker, device)
    options = {}
    if mode != "dense" or rerank:
        options = {"rerank": rerank, "reranker": reranker, "fusion": fusion}
    results = idx.search_batch(list(text), k=k, mode=mode, **options)
    for q, hits in zip(text, results):
        for rank, hit in enumerate(hits, start=1):
            obj = {"query": q, **hit.to_json(rank)}
            emit(obj, as_json, f"{rank}\t{hit.score:.4f}\t{hit.ext_id}\t{hit.text[:100]!r}")


def _default_rerank(mode: str, reranker, device: str):
    """Hybrid reranks by default when the default cross-encoder is on disk (never a download);
    an explicit --rerank or --reranker must load, or fail with how to provide the model."""
    from pathlib import Path

    from retrieval.errors import ModelError
    from retrieval.hybrid.rerank import DEFAULT_RERANKER, get_reranker, resolve_model
    from retrieval.progress import note

    dev = None if device == "auto" else device
    if reranker is not None:
        return True, get_reranker(reranker, device=dev)
    if mode != "hybrid":
        return False, None
    try:
        local = Path(resolve_model(None))
    except ModelError:
        local = None
    if local is None or not local.is_dir():
        note(f"ranking without a cross-encoder: {DEFAULT_RERANKER} is not on disk "
             "(pass --reranker DIR, or --rerank to download it when online)")
        return False, None
    return True, get_reranker(str(local), device=dev)
