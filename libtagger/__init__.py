"""libtagger: tag a music library with genres, from the audio itself."""

from libtagger.analysis.classify import Classifier, TrackResult, classify_file
from libtagger.config import Config, load_config
from libtagger.errors import (
    ConfigError,
    DecodeError,
    FileError,
    LibtaggerError,
    ModelError,
    TagWriteError,
)
from libtagger.analysis.vote import GenreScore

__version__ = "0.1.0"

__all__ = [
    "Classifier",
    "Config",
    "ConfigError",
    "DecodeError",
    "FileError",
    "GenreScore",
    "LibtaggerError",
    "ModelError",
    "TagWriteError",
    "TrackResult",
    "__version__",
    "classify_file",
    "load_config",
]
