"""Smoke-test an engine: ``q2rec generate --backend vllm --prompt "Say hi"`` prints JSON lines."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from actors.llm.engine import EngineConfig, SamplingConfig
from actors.llm.factory import make_engine


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``q2rec generate``."""
    ap.add_argument("--backend", default="auto", choices=["auto", "vllm", "transformers", "openai"])
    ap.add_argument("--model", help="local HF folder or hub id (default: the packaged SmolLM2-135M-Instruct)")
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--prompt", action="append", required=True, help="a user message (repeatable: a batch)")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--n", type=int, default=1, help="samples per prompt (then sampled at temperature 0.8)")
    ap.add_argument("--score", action="append",
                    help="instead of generating, the log-probability of this answer to the prompt (one per --prompt)")  # fmt: skip


def command(args: argparse.Namespace) -> int:
    """Generate (or score) the prompts, one JSON line per answer; returns the exit code."""
    engine = make_engine(EngineConfig(backend=args.backend, model=args.model, base_url=args.base_url))
    convs = [[{"role": "user", "content": p}] for p in args.prompt]
    if args.score:
        for c in engine.score(convs, args.score):
            print(json.dumps(asdict(c)))
        return 0
    sampling = SamplingConfig(max_tokens=args.max_tokens, n=args.n, temperature=0.8 if args.n > 1 else 0.0)
    for gen in engine.generate(convs, sampling):
        print(json.dumps(asdict(gen)))
    return 0
