"""Training windows: token rows as llama.cpp's dataset holds them, and which of their tokens the loss counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MASKED = -1  # the label of a token the loss skips (the patched engine's convention; stock llama.cpp has none)


@dataclass(frozen=True)
class Windows:
    """`tokens` (n, n_ctx + 1) int32: the inputs are tokens[:, :-1], the next-token labels tokens[:, 1:].
    `trained` (n, n_ctx + 1) bool, or None for every token: whether token j is a target the loss counts
    (column 0 never is). Answer-only training masks the prompt so the model learns answers, not questions."""

    tokens: np.ndarray
    trained: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.tokens.ndim != 2 or self.tokens.dtype != np.int32:
            raise ValueError(f"windows must be int32 (n, n_ctx + 1), not {self.tokens.dtype} {self.tokens.shape}")
        if self.trained is not None and self.trained.shape != self.tokens.shape:
            raise ValueError(f"trained mask {self.trained.shape} does not match the windows {self.tokens.shape}")

    @property
    def n_ctx(self) -> int:
        return int(self.tokens.shape[1]) - 1

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, rows: slice | np.ndarray) -> Windows:
        return Windows(self.tokens[rows], None if self.trained is None else self.trained[rows])

    @property
    def inputs(self) -> np.ndarray:
        return self.tokens[:, :-1]

    @property
    def labels(self) -> np.ndarray:
        """Next-token labels, MASKED where the loss skips the token."""
        labels = self.tokens[:, 1:]
        return labels if self.trained is None else np.where(self.trained[:, 1:], labels, np.int32(MASKED))

    @property
    def n_targets(self) -> int:
        return int(self.tokens[:, 1:].size if self.trained is None else self.trained[:, 1:].sum())

    def with_targets(self) -> Windows:
        """The windows with at least one trained token: a step without one would only move the optimizer's
        momentum."""
        if self.trained is None:
            return self
        return self[np.flatnonzero(self.trained[:, 1:].any(axis=1))]

    def everything_trained(self) -> Windows:
        """The same windows with every token a target: what the stock engine trains."""
        return Windows(self.tokens)
