"""The llama.cpp that fine-tuning runs on: a pinned llama.cpp with our patches (built by `jenova-fast engine
build`), or llama-cpp-python's stock one.

    pin.py        the one llama.cpp version, and where its source comes from
    patches/      the patches, each with what it changes, why, and its upstream status
    patching.py   applies them (strict, idempotent)
    build.py      source -> patched tree -> one shared library in the cache
    library.py    loads an engine and declares the C functions training calls
    gradcheck.py  each patched backward pass against finite differences, on the built library
    cli.py        `jenova-fast engine build | status | check | clean`
"""

from jenova_fast.engine.build import EngineError
from jenova_fast.engine.library import ENGINES, Choice, Engine, choose, load

__all__ = ["ENGINES", "Choice", "Engine", "EngineError", "choose", "load"]
