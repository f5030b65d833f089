"""GGUF metadata: read it, and rewrite a file with changed keys or tensors (streamed, atomic).

llama.cpp's trainer saves a model without `tokenizer.chat_template` and with `<arch>.context_length` set
to the training context; `restore_metadata` puts back what the base model had.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from jenova_fast import _fs
from jenova_fast.finetune.errors import FinetuneError

log = logging.getLogger(__name__)

# A tensor rewrite: (name, ggml type, data as stored) -> (shape, dtype, a function producing the new data,
# ggml type or None for plain dtypes). For quantized output, shape and dtype are the bytes' (uint8).
TensorRewrite = Callable[
    [str, Any, np.ndarray], tuple[tuple[int, ...], np.dtype, Callable[[], np.ndarray], Any]
]


def open_reader(path: str | os.PathLike[str]) -> Any:
    """A `gguf.GGUFReader`, or a FinetuneError that names the file when it is not a readable GGUF."""
    import gguf

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise FinetuneError(f"{path}: cannot read the model ({exc.strerror}); check the path") from exc
    if magic != b"GGUF":
        raise FinetuneError(
            f"{path}: not a GGUF file (starts with {magic!r}); convert it with llama.cpp's convert_hf_to_gguf.py"
        )
    try:
        return gguf.GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError, struct.error, IndexError... on truncated files
        raise FinetuneError(f"{path}: GGUF file is damaged or truncated ({exc}); download or convert it again") from exc


def read_kv(reader: Any) -> dict[str, Any]:
    """All key/value fields as Python values (strings decoded, arrays as lists)."""
    out: dict[str, Any] = {}
    for field in reader.fields.values():
        if field.name.startswith("GGUF."):
            continue
        out[field.name] = field.contents()
    return out


def _typed_value(field: Any) -> tuple[Any, Any, Any]:
    """(value, gguf value type, array item type) of a ReaderField or of a `(value, type)` pair."""
    import gguf

    if not isinstance(field, gguf.ReaderField):
        return field[0], field[1], None
    main = field.types[0]
    sub = field.types[-1] if main == gguf.GGUFValueType.ARRAY else None
    return field.contents(), main, sub


def rewrite_gguf(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    set_from: dict[str, Any] | None = None,
    drop: Iterable[str] = (),
    tensor_rewrite: TensorRewrite | None = None,
) -> Path:
    """Copy `src` to `dst` with keys replaced/added from `set_from` (name -> a ReaderField of another file
    or a `(value, gguf.GGUFValueType)` pair),
    keys in `drop` removed, empty arrays dropped (gguf refuses them; llama.cpp writes e.g. empty merges),
    and tensors optionally converted one at a time so memory stays at one tensor."""
    import gguf

    reader = open_reader(src)
    dst = Path(dst)
    set_from = dict(set_from or {})
    dropped = set(drop)
    arch = reader.fields["general.architecture"].contents()
    with _fs.atomic_path(dst) as tmp:  # an interrupted write leaves no dead temp file behind
        writer = gguf.GGUFWriter(str(tmp), arch, endianess=reader.endianess)
        try:
            _write(writer, reader, src, set_from, dropped, tensor_rewrite)
        finally:
            writer.close()
    return dst


def _write(writer: Any, reader: Any, src: Any, set_from: dict[str, Any], dropped: set[str],
           tensor_rewrite: TensorRewrite | None) -> None:
    import gguf

    names = [*reader.fields, *(k for k in set_from if k not in reader.fields)]
    for name in names:
        if name.startswith("GGUF.") or name == "general.architecture" or name in dropped:
            continue
        value, main, sub = _typed_value(set_from.get(name) or reader.fields[name])
        if main == gguf.GGUFValueType.ARRAY and len(value) == 0:
            log.debug("%s: dropping empty array %s", src, name)
            continue
        writer.add_key_value(name, value, main, sub_type=sub)

    plans: list[tuple[Any, Any, Callable[[], np.ndarray], Any]] = []
    for tensor in reader.tensors:
        if tensor_rewrite is None:
            plans.append((tensor.data.shape, tensor.data.dtype, _as_stored(tensor), tensor.tensor_type))
        else:
            plans.append(tensor_rewrite(tensor.name, tensor.tensor_type, tensor.data))
    for tensor, (shape, dtype, _, ggml_type) in zip(reader.tensors, plans, strict=True):
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        writer.add_tensor_info(tensor.name, shape, np.dtype(dtype), nbytes, ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, _, produce, _ in plans:
        writer.write_tensor_data(produce(), tensor_endianess=reader.endianess)


def _as_stored(tensor: Any) -> Callable[[], np.ndarray]:
    return lambda: tensor.data


def restore_metadata(trained: str | os.PathLike[str], base: str | os.PathLike[str],
                     out: str | os.PathLike[str], *, extra: dict[str, Any] | None = None) -> list[str]:
    """Write `out` = `trained` plus every key of `base` the trainer dropped (the chat template first of all)
    and the base's context length, then `extra` (name -> (value, type)). Returns the keys set."""
    restore = restored_keys(trained, base, extra=extra)
    rewrite_gguf(trained, out, set_from=restore)
    return sorted(restore)


def restored_keys(trained: str | os.PathLike[str], base: str | os.PathLike[str], *,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keys `restore_metadata` sets, for `rewrite_gguf(set_from=...)`."""
    base_reader = open_reader(base)
    trained_reader = open_reader(trained)
    arch = base_reader.fields["general.architecture"].contents()
    ctx_key = f"{arch}.context_length"
    restore = {
        name: field
        for name, field in base_reader.fields.items()
        if not name.startswith("GGUF.") and name not in trained_reader.fields
    }
    if ctx_key in base_reader.fields:
        restore[ctx_key] = base_reader.fields[ctx_key]
    restore.update(extra or {})
    return restore
