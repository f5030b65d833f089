"""The patch applier and the build's bookkeeping, on real files: strict, idempotent, keyed by what it builds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jenova_fast.engine import build
from jenova_fast.engine.patching import PatchError, apply, header, parse

ORIGINAL = "".join(f"line {i}\n" for i in range(1, 41))

PATCH = """Subject: a test patch

What: two hunks.
---
diff --git a/src/file.c b/src/file.c
--- a/src/file.c
+++ b/src/file.c
@@ -3,3 +3,4 @@
 line 3
 line 4
+inserted after 4
 line 5
@@ -30,3 +31,3 @@
 line 30
-line 31
+line thirty-one
 line 32
"""


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "file.c").write_text(ORIGINAL)
    return tmp_path


def test_applies_once_then_knows_it_is_applied(tree, tmp_path):
    patch = tmp_path / "0001.patch"
    patch.write_text(PATCH)
    assert apply(patch, tree) is True
    text = (tree / "src" / "file.c").read_text()
    assert "line 4\ninserted after 4\nline 5\n" in text and "line thirty-one\n" in text and "line 31\n" not in text
    assert apply(patch, tree) is False  # idempotent
    assert (tree / "src" / "file.c").read_text() == text
    assert header(patch) == "Subject: a test patch\n\nWhat: two hunks."


def test_a_tree_that_moved_is_refused_untouched(tree, tmp_path):
    patch = tmp_path / "0001.patch"
    patch.write_text(PATCH)
    moved = ORIGINAL.replace("line 31\n", "line 31 changed upstream\n")
    (tree / "src" / "file.c").write_text(moved)
    with pytest.raises(PatchError, match=r"src/file.c:30 does not match.*regenerate the patch"):
        apply(patch, tree)
    assert (tree / "src" / "file.c").read_text() == moved  # the first hunk was not written either


def test_every_shipped_patch_is_a_complete_diff_with_its_four_answers():
    patches = build.patches()
    assert [p.name[:4] for p in patches] == [f"{n:04d}" for n in range(1, len(patches) + 1)]
    assert len(patches) >= 6
    for patch in patches:
        assert parse(patch)
        text = header(patch)
        for answer in ("Subject:", "What:", "Why:", "Upstream:", "Test:", "Drop when:"):
            assert answer in text, (patch.name, answer)


def test_the_build_key_follows_the_patches_and_the_gpu_switch(monkeypatch):
    key = build.key()
    assert build.key() == key and build.key("cuda") != key
    monkeypatch.setenv("CMAKE_ARGS", "-DGGML_VULKAN=on")
    assert build.key() != key


def test_engine_status_says_which_engine_and_lists_the_patches(tmp_path):
    env = {"JENOVA_FAST_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "jenova_fast", "engine", "status"], capture_output=True, text=True,
                          env=env, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("engine: stock (the patched engine is not built")
    assert "0003-loss-mask.patch" in done.stdout


def test_rewording_a_patch_header_does_not_rebuild(tmp_path, monkeypatch):
    copies = tmp_path / "patches"
    copies.mkdir()
    for patch in build.patches():
        (copies / patch.name).write_text(patch.read_text())
    monkeypatch.setattr(build, "PATCHES", copies)
    key = build.key()
    first = copies / build.patches()[0].name
    first.write_text(first.read_text().replace("Subject:", "Subject: reworded,", 1))
    assert build.key() == key
    first.write_text(first.read_text().replace("+                // jenova-fast 0001", "+                // 0001", 1))
    assert build.key() != key
