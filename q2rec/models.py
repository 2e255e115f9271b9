"""Set up the offline default models: convert the packaged LLM once, check the packaged encoder.

q2rec models        # run by `make setup`; idempotent
"""

from __future__ import annotations

import argparse
import sys

from actors.llm.packaged import ModelNotFound, default_encoder_dir, default_llm_dir


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """No options of its own."""


def command(args: argparse.Namespace) -> int:
    """Convert and check both models; print where they are. Returns the exit code."""
    try:
        llm = default_llm_dir()
        encoder = default_encoder_dir()
    except ModelNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"LLM: {llm}\nencoder: {encoder}")
    return 0
