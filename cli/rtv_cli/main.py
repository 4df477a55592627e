"""`rtv`: one click group; each subcommand lives in its own module, imported only when run."""

from __future__ import annotations

import importlib
import os

import click

# rtv draws its own progress bars; the model loaders' per-file bars are noise on a query.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

COMMANDS = {
    "index": ("rtv_cli.exact_cmds", "index", "Build an index from corpus files or directories."),
    "count": ("rtv_cli.exact_cmds", "count", "Count occurrences of strings in the corpus."),
    "find": ("rtv_cli.exact_cmds", "find", "List occurrences of a string (document, offset, snippet)."),
    "cnf": ("rtv_cli.exact_cmds", "cnf", "Documents matching an AND of OR-groups of strings."),
    "extract": ("rtv_cli.exact_cmds", "extract", "Print documents rebuilt from the index."),
    "info": ("rtv_cli.exact_cmds", "info", "Sizes, counts, shards and format of an index."),
    "query": ("rtv_cli.query_cmd", "query", "Search passages (hybrid, dense, lexical or exact)."),
    "contamination": ("rtv_cli.contamination_cmd", "contamination", "Check benchmarks for verbatim overlap with the corpus."),
    "serve": ("rtv_cli.serve_cmd", "serve", "Serve indexes over HTTP: JSON API, OpenAPI docs and a web page."),
    "add": ("rtv_cli.update_cmds", "add", "Add documents to an index (a new segment)."),
    "delete": ("rtv_cli.update_cmds", "delete", "Delete documents from an index (tombstones)."),
    "compact": ("rtv_cli.update_cmds", "compact", "Merge an index's segments and drop deleted documents."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        # short help without importing every command module (keeps `rtv --help` fast)
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rtv", prog_name="rtv")
def cli():
    """rtv: exact and semantic search over one corpus.

    Patterns that start with '-' go after `--`, e.g. `rtv count IDX -- -foo`.
    """


if __name__ == "__main__":
    cli()
