"""autotransfer: search how to transfer a pretrained network to your data.

Importing this package is cheap: torch and the plugins load when a search needs them.
"""

from .hookspecs import hookimpl

__version__ = "0.1.0"


def search(data, **options):
    """Run a search from Python, within ``budget`` (seconds or "10m"); see
    ``autotransfer.config.SearchConfig`` for the options. Returns a ``SearchResult``."""
    import time

    started = time.time()
    from .config import SearchConfig
    from .engine.run import run_search

    return run_search(SearchConfig(data=str(data), **options), started=started)


__all__ = ["hookimpl", "search", "__version__"]
