"""rtv add / delete / compact: change an index by publishing a new generation (retrieval.update)."""

from __future__ import annotations

import click

from .common import ByteSize, emit, output_options

_WORKERS = click.option("--workers", type=click.IntRange(min=1), default=None,
                        help="Shards built at once, each in a worker process (default: the cores this process may use).")
_MAX_MEMORY = click.option("--max-memory", type=ByteSize(), default=None, metavar="SIZE",
                           help="Memory for the shard builds running at once (as for rtv index).")
_DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                       help="Where new passages are embedded (indexes with a dense part).")


def _summary(s: dict) -> str:
    return (f"{s['path']}: {s['generation']}, {s['live_documents']} live documents, {s['deleted_documents']} deleted, "
            f"{s['segments']} segment(s); {s['bytes_written']} bytes written")


@click.command()
@click.argument("index_dir", type=click.Path())
@click.argument("sources", nargs=-1, required=True, type=click.Path(readable=False))  # the reader says why
@click.option("--replace", is_flag=True,
              help="A document whose id is already in the index replaces it (the old one is deleted); "
                   "without it such a document is an error.")
@click.option("--text-field", default=None, help="Field holding the text (default: the index's).")
@click.option("--id-field", default=None,
              help="Field holding a unique document id (default: the corpus's id, _id or doc_id field, else FILE:LINE).")
@click.option("--errors", type=click.Choice(["strict", "replace"]), default=None,
              help="Invalid UTF-8: refuse with its position, or replace it (default: the index's).")
@_WORKERS
@_MAX_MEMORY
@_DEVICE
@output_options
def add(index_dir, sources, replace, text_field, id_field, errors, workers, max_memory, device, as_json):
    """Add the documents of SOURCES to INDEX_DIR as a new segment (new shards, passages, vectors).

    Readers see the index before or after the add, never between; an add that fails or is killed
    leaves it as it was."""
    from retrieval.update import add as add_documents

    s = add_documents(index_dir, sources, replace=replace, text_field=text_field, id_field=id_field, errors=errors,
                      workers=workers, max_memory=max_memory, device=device)
    emit(s, as_json, f"added {s['added']} documents ({s['replaced']} replaced) to {_summary(s)}")


@click.command()
@click.argument("index_dir", type=click.Path())
@click.option("--id", "ids", multiple=True, metavar="ID", help="External id of a document to delete (repeatable).")
@click.option("--where", default=None, metavar="EXPR", help="Delete the documents whose metadata match EXPR (as query --where).")
@output_options
def delete(index_dir, ids, where, as_json):
    """Delete documents from INDEX_DIR (tombstones: every query leaves them out at once; rtv compact
    drops their text)."""
    from retrieval.update import delete as delete_documents

    s = delete_documents(index_dir, ids, where=where)
    emit(s, as_json, f"deleted {s['deleted_now']} documents from {_summary(s)}")


@click.command()
@click.argument("index_dir", type=click.Path())
@_WORKERS
@_MAX_MEMORY
@_DEVICE
@output_options
def compact(index_dir, workers, max_memory, device, as_json):
    """Merge the segments of INDEX_DIR into one and drop deleted documents' text: the same index
    as a fresh build of the live documents (rebuilt from the index itself, not the source files)."""
    from retrieval.update import compact as compact_index

    s = compact_index(index_dir, workers=workers, max_memory=max_memory, device=device)
    emit(s, as_json, f"compacted {s['merged_segments']} segment(s), dropped {s['dropped']} deleted documents: {_summary(s)}")
