"""One exception hierarchy for everything rtv refuses to do.

Each message is a single line that names the file or argument at fault and says how to fix it;
the CLI prints it as-is and exits 1.
"""


class RtvError(Exception):
    """Base class of every error rtv raises on bad input or a broken index."""


class InputError(RtvError, ValueError):
    """A corpus file, field, query or argument that cannot be used."""


class IndexFormatError(RtvError):
    """An index directory that is missing, truncated, corrupted or from another format version."""


class ModelError(RtvError):
    """An embedding or reranking model that cannot be loaded offline, or does not match the index."""


class MissingDependencyError(RtvError, ImportError):
    """An optional dependency is not installed; the message names the pip command."""


def require(module: str, extra: str):
    """Import an optional dependency late, or raise an error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed ({exc}); install it with: pip install 'rtv[{extra}]'"
        ) from None
