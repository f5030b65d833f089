"""The one exception of the fine-tuning pipeline."""

from __future__ import annotations


class FinetuneError(Exception):
    """A problem with the user's input or environment; the message names the file and what to do."""
