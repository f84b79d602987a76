"""transformers' messages that are expected here, turned down once (both model loading paths use it)."""

from __future__ import annotations

import os


def quiet_transformers() -> None:
    """transformers 5 prints a load report for every missing head weight; that is expected here."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
