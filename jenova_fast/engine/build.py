"""Build the patched engine: the pinned llama.cpp source, our patches, one shared library, in the user's cache.

The build is keyed by everything that changes the library (pin, patches, CMake wrapper, GPU switches), so a new
patch set builds anew beside the old one and a finished build is never touched again. It builds in a locked
temp folder renamed into place at the end: an interrupted build leaves nothing that looks built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from jenova_fast import _fs
from jenova_fast.engine import pin
from jenova_fast.engine.patching import apply

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
PATCHES = HERE / "patches"
GPU_FLAGS = {"cuda": ["-DGGML_CUDA=ON"], "metal": ["-DGGML_METAL=ON"], "vulkan": ["-DGGML_VULKAN=ON"]}
LIBRARY = {"Linux": "libjenova-llama.so", "Darwin": "libjenova-llama.dylib", "Windows": "jenova-llama.dll"}
MANIFEST = "engine.json"


class EngineError(Exception):
    """The engine cannot be built or loaded; the message says why and what to run."""


@dataclass(frozen=True)
class Built:
    """A finished build: its folder, the library and what went into it (engine.json)."""

    folder: Path
    library: Path
    manifest: dict[str, object]


def patches() -> list[Path]:
    return sorted(PATCHES.glob("*.patch"))


def library_name() -> str:
    return LIBRARY.get(platform.system(), "libjenova-llama.so")


def cmake_args(gpu: str | None) -> list[str]:
    """The GPU switch, then the user's CMAKE_ARGS (llama-cpp-python's convention, e.g. -DGGML_CUDA=on)."""
    args = list(GPU_FLAGS[gpu]) if gpu else []
    return args + shlex.split(os.environ.get("CMAKE_ARGS", ""))


def key(gpu: str | None = None) -> str:
    """A digest of what the library is made of; a build's folder is named by it."""
    digest = hashlib.sha256()
    for part in (pin.LLAMA_CPP_COMMIT, pin.SDIST_SHA256, *cmake_args(gpu), platform.machine()):
        digest.update(part.encode() + b"\0")
    for path in patches():  # the diffs, not their headers: rewording a header rebuilds nothing
        text = path.read_text(encoding="utf-8")
        digest.update(path.name.encode() + b"\0" + text[text.find("\ndiff --git "):].encode())
    for path in (HERE / "CMakeLists.txt", HERE / "engine.c"):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def engines_dir() -> Path:
    return _fs.cache_home() / "engine"


def find(gpu: str | None = None) -> Built | None:
    """The finished build for the current patch set, if there is one."""
    folder = engines_dir() / key(gpu)
    library = folder / library_name()
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Built(folder, library, manifest) if library.is_file() else None


def built() -> list[Built]:
    """Every finished build in the cache (the current patch set's and older ones)."""
    found = []
    for manifest in sorted(engines_dir().glob(f"*/{MANIFEST}")):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found.append(Built(manifest.parent, manifest.parent / library_name(), data))
    return found


def fetch_sdist(source: Path | None = None) -> Path:
    """The pinned sdist, checked by SHA-256: `source` if given, else pip's download (from its cache when
    `pip install` already built llama-cpp-python) into the engine cache."""
    if source is None:
        source = engines_dir() / "src" / pin.SDIST
        if not source.is_file():
            source.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=source.parent) as tmp:
                log.info("downloading %s from the package index (pip download)", pin.SDIST)
                done = subprocess.run(
                    [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", "llama-cpp-python",
                     f"llama-cpp-python=={pin.LLAMA_CPP_PYTHON}", "-d", tmp],
                    capture_output=True, text=True, check=False)
                got = Path(tmp) / pin.SDIST
                if done.returncode != 0 or not got.is_file():
                    said = (done.stderr.strip().splitlines() or ["no output"])[-1]
                    raise EngineError(
                        f"could not download {pin.SDIST} ({said}); download it where the package index is reachable "
                        "(pip download --no-deps --no-binary llama-cpp-python "
                        f"llama-cpp-python=={pin.LLAMA_CPP_PYTHON}) and run: jenova-fast engine build --source FILE")
                os.replace(got, source)
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != pin.SDIST_SHA256:
        raise EngineError(f"{source}: SHA-256 {digest.hexdigest()} is not the pinned {pin.SDIST}'s "
                          f"({pin.SDIST_SHA256}); delete it and build again")
    return source


def extract(sdist: Path, tree: Path) -> None:
    """The parts of the sdist's vendored llama.cpp that the build reads (pin.SOURCE_PARTS)."""
    with tarfile.open(sdist) as archive:
        members = []
        for member in archive.getmembers():
            name = member.name.removeprefix(pin.SOURCE_PREFIX)
            if name == member.name or not name.startswith(pin.SOURCE_PARTS) or not (member.isfile() or member.isdir()):
                continue
            member.name = name
            members.append(member)
        archive.extractall(tree, members=members, filter="data")


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name  # installed by pip into this environment
    return str(candidate) if candidate.is_file() else None


_PROGRESS = re.compile(r"^\[\s*(\d+)%\]|^\[(\d+)/(\d+)\]")


def _steps(process: subprocess.Popen[str]) -> Iterator[tuple[tuple[int, int] | None, str]]:
    """Each output line, with (done, total) where the build tool says it: ninja's [n/N], make's [ n%]."""
    assert process.stdout is not None
    for line in process.stdout:
        match = _PROGRESS.match(line)
        done = None
        if match and match.group(1):
            done = (int(match.group(1)), 100)
        elif match:
            done = (int(match.group(2)), int(match.group(3)))
        yield done, line.rstrip()


def build(*, gpu: str | None = None, source: Path | None = None, jobs: int | None = None, force: bool = False,
          progress: Callable[[int, int], None] | None = None) -> Built:
    """Build (or find) the patched engine; `progress(done, total)` follows the compile (ninja: files)."""
    if not force and (done := find(gpu)) is not None:
        return done
    cmake = _tool("cmake")
    if cmake is None:
        raise EngineError("building the engine needs CMake 3.24 or newer: pip install cmake (or your system's)")
    started = time.monotonic()
    sdist = fetch_sdist(source)
    the_key = key(gpu)
    dest = engines_dir() / the_key
    with _fs.temporary(dest, directory=True, exclusive="(another `jenova-fast engine build` is running)") as work:
        tree, build_dir = work / "llama.cpp", work / "build"
        extract(sdist, tree)
        applied = [patch.name for patch in patches() if apply(patch, tree)]
        ninja = _tool("ninja")
        generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []
        configure = [cmake, "-S", str(HERE), "-B", str(build_dir), *generator, "-DCMAKE_BUILD_TYPE=Release",
                     f"-DLLAMA_CPP_SOURCE={tree}", f"-DJENOVA_ENGINE_PATCHES={the_key}", *cmake_args(gpu)]
        _run(configure, build_dir / "configure.log", None)
        jobs = jobs or _fs.available_cores()
        _run([cmake, "--build", str(build_dir), "--target", "jenova-llama", "-j", str(jobs)],
             build_dir / "build.log", progress)
        library = next(build_dir.rglob(library_name()), None)
        if library is None:
            raise EngineError(f"the build finished without {library_name()}; see {build_dir / 'build.log'}")
        shutil.copy2(library, work / library_name())
        manifest = {"key": the_key, "llama_cpp_python": pin.LLAMA_CPP_PYTHON, "llama_cpp_commit": pin.LLAMA_CPP_COMMIT,
                    "patches": applied, "cmake_args": cmake_args(gpu), "gpu": gpu,
                    "seconds": round(time.monotonic() - started, 1), "built": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(tree)
        shutil.rmtree(build_dir)
        if dest.exists():  # a stale folder without a manifest (find() said not built)
            shutil.rmtree(dest)
        os.replace(work, dest)
        _fs.fsync_dir(dest.parent)
    done = find(gpu)
    assert done is not None
    return done


def _run(command: list[str], log_path: Path, progress: Callable[[int, int], None] | None) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: list[str] = []
    with open(log_path, "w", encoding="utf-8") as out, subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace") as process:
        try:
            for done, line in _steps(process):
                out.write(line + "\n")
                tail = [*tail[-30:], line]
                if progress is not None and done is not None:
                    progress(*done)
        except BaseException:
            process.terminate()
            process.wait()
            raise
    if process.returncode != 0:
        errors = [line for line in tail if "error" in line.lower()] or tail[-5:]
        # the temp folder goes away with the failed build; keep the log where the user can read it
        failed_log = engines_dir() / "last-failed-build.log"
        shutil.copyfile(log_path, failed_log)
        said = errors[-1] if errors else ""
        raise EngineError(f"{Path(command[0]).name} failed (exit {process.returncode}): {said}; "
                          f"the whole log: {failed_log}")
