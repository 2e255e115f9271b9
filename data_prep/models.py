"""Set up the offline default models: convert the packaged LLM once, check the packaged encoder.

python -m data_prep.models        # run by `make setup`; idempotent
"""

from __future__ import annotations

import logging
import sys

from actors.llm.packaged import ModelNotFound, default_encoder_dir, default_llm_dir


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        llm = default_llm_dir()
        encoder = default_encoder_dir()
    except ModelNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"LLM: {llm}\nencoder: {encoder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
