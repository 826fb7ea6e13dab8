"""Small offline datasets for examples, benchmarks and reproductions."""
from .digits import Digits, DigitsNotInstalledError, load_digits
from .shakespeare import CharCorpus, CorpusNotInstalledError, load_shakespeare

__all__ = ["CharCorpus", "CorpusNotInstalledError", "load_shakespeare", "Digits", "DigitsNotInstalledError",
           "load_digits"]
