"""The one llama.cpp this project builds its engine from: the commit llama-cpp-python 0.3.36 vendors.

Its source comes from that release's sdist on PyPI (the registry every user already reaches), checked by SHA-256.
Bumping: change all four lines together, regenerate every patch against the new tree (docs/finetune.md, "The
engine": the checklist), and run tests/engine.
"""

LLAMA_CPP_PYTHON = "0.3.36"
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
SDIST = f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# the part of the sdist the build reads: llama.cpp's CMake project, ggml with every backend, libllama
SOURCE_PREFIX = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
SOURCE_PARTS = ("CMakeLists.txt", "LICENSE", "cmake/", "ggml/", "include/", "src/", "vendor/", "licenses/")
