"""Small offline datasets for examples, benchmarks and reproductions."""
from .shakespeare import CharCorpus, CorpusNotInstalledError, load_shakespeare

__all__ = ["CharCorpus", "CorpusNotInstalledError", "load_shakespeare"]
