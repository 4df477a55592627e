"""The dense index: sentence-transformers embeddings in FAISS (CPU or GPU), compressed with PQ or
binary codes and re-scored from a memory-mapped store of full vectors.

Heavy dependencies (torch, sentence-transformers, faiss) are imported only when used.
"""

from .recipes import available_recipes, load_recipe, plan


def __getattr__(name):
    if name in ("load_embedder", "Embedder", "DEFAULT_MODEL_ID"):
        from . import embedder

        return getattr(embedder, name)
    if name in ("build_dense", "build_from_vectors", "DenseIndex", "check_model", "gpu_count", "embed_passages"):
        from . import index

        return getattr(index, name)
    raise AttributeError(name)


__all__ = ["load_embedder", "Embedder", "DEFAULT_MODEL_ID", "build_dense", "build_from_vectors", "DenseIndex",
           "check_model", "gpu_count", "load_recipe", "available_recipes", "plan", "embed_passages"]
