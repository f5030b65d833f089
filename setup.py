"""Native extensions. Switches: JENOVA_FAST_DEBUG=1 (-O0 -g, Cython line tracing),
JENOVA_FAST_SANITIZE=1 (address + undefined behaviour sanitizers)."""

import importlib.util
import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("JENOVA_FAST_DEBUG") == "1"
SANITIZE = os.environ.get("JENOVA_FAST_SANITIZE") == "1"


def simdjson_sources() -> Path:
    """simdjson.h/.cpp as installed by the pysimdjson wheel (pinned in pyproject's build requires)."""
    spec = importlib.util.find_spec("simdjson")
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / "simdjson.cpp").is_file():
        raise SystemExit(
            "building jenova-fast needs simdjson.h/simdjson.cpp from the pysimdjson wheel: "
            "`pip install pysimdjson==7.0.2`, or build with `pip install .` which installs it itself"
        )
    return folder


SIMDJSON = simdjson_sources()
compile_args = ["-std=c++17", "-Wall", "-Wno-unused-function"] + (["-O0", "-g"] if DEBUG else ["-O3"])
link_args = []
if SANITIZE:
    # -O1 -g: ASan's recommended level (exact stack traces, and simdjson.cpp compiles in a fraction of -O3's time)
    compile_args = [a for a in compile_args if a != "-O3"] + ([] if DEBUG else ["-O1", "-g"])
    compile_args += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    link_args += ["-fsanitize=address,undefined"]

common = dict(language="c++", extra_compile_args=compile_args, extra_link_args=link_args)
extensions = [
    Extension("jenova_fast.prepare._jsonl", ["jenova_fast/prepare/_jsonl.pyx"], **common),
    Extension(
        "jenova_fast.prepare._pipeline",
        ["jenova_fast/prepare/_pipeline.pyx", "csrc/pipeline.cpp", str(SIMDJSON / "simdjson.cpp")],
        include_dirs=["csrc", str(SIMDJSON)],
        **common,
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3, "linetrace": DEBUG},
        annotate=False,
    )
)
