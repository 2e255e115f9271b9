"""Embed item texts on Ray Data and build the FAISS index over the whole pool.

    q2rec index --dataset ml-100k [--text metadata|description|enriched|both] [--kind auto|flat|hnsw|ivf]

``metadata`` embeds the item's metadata text; ``description`` the LLM-enriched description alone (needs
``items_enriched.parquet``): retrieval scores items with metadata + a tuned weight x description
(``actors.retrieval_query``), and ``both`` builds these two. ``enriched`` embeds the metadata followed by
the description as one text (the content ablation of ``tune.content``). Each variant goes to
``index/<variant>/``: ``vectors.npy`` (catalog order), ``faiss.index``, ``item_ids.json``, ``index.json``
(the resolved index config and, for an approximate index, its measured recall@10 against exact search).
Embedding writes its vectors in parts (``index/<variant>.embed_parts/``) as it goes, so an interrupted
run resumes where it stopped; the parts are removed once the index is saved.
The default kind ``auto`` is exact up to 100,000 items and IVF above. A variant whose inputs are unchanged
is reused.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from actors.encoder import EncoderConfig
from actors.prompts import enriched_text, metadata_text
from actors.retriever import FaissRetriever, IndexConfig
from data_prep.artifacts import ArtifactPaths, fingerprint
from data_prep.schema import DataError

log = logging.getLogger(__name__)
VARIANTS = ("metadata", "description", "enriched")
BOTH = ("metadata", "description")  # what retrieval uses


class EncodeBatch:
    """Ray Data actor: one text encoder per replica."""

    def __init__(self, encoder: dict[str, Any]) -> None:
        from actors.encoder import TextEncoder

        self.encoder = TextEncoder(EncoderConfig(**encoder))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vecs = self.encoder.encode([str(t) for t in batch["text"]])
        return {"row": batch["row"], "vector": vecs}


def item_texts(paths: ArtifactPaths, variant: str) -> pd.DataFrame:
    """``item_id, text`` in catalog order for one variant."""
    items = pd.read_parquet(paths.items)
    if variant == "metadata":
        texts = [metadata_text(r) for r in items.to_dict("records")]
    elif variant in ("enriched", "description"):
        path = paths.items_enriched
        if not path.is_file():
            raise DataError(f"{path}: not found; run `q2rec enrich` first (or use --text metadata)")
        desc = pd.read_parquet(path).set_index("item_id")["description"]
        missing = ~items["item_id"].isin(desc.index)
        if missing.any():
            raise DataError(
                f"{path}: {int(missing.sum())} catalog items have no description; rerun enrichment"
            )
        if variant == "description":
            texts = [str(desc[i]) for i in items["item_id"]]
        else:
            texts = [enriched_text(r, desc[r["item_id"]]) for r in items.to_dict("records")]
    else:
        raise ValueError(f"--text must be one of {VARIANTS + ('both',)}, got {variant!r}")
    return pd.DataFrame({"item_id": items["item_id"].astype(str), "text": texts})


def embed_texts(
    texts: list[str],
    encoder: EncoderConfig,
    progress: bool = True,
    parts_dir: Path | None = None,
    part_rows: int = 4096,
) -> np.ndarray:
    """Encode on Ray Data (one encoder actor, ``part_rows`` texts per call); rows come back in input
    order. With ``parts_dir`` each call's rows are written as a part as soon as they are encoded, and a
    rerun of the same texts and encoder encodes only the rows no part holds (a crash loses at most the
    part in flight)."""
    import ray

    from data_prep import parts
    from runtime.ray_cluster import init_ray, quiet_ray_data

    out: np.ndarray | None = None
    todo = np.arange(len(texts))
    bar = tqdm(total=len(texts), desc="embed", unit="item", disable=not progress)
    if parts_dir is not None:
        parts.claim(parts_dir, {"encoder": asdict(encoder), "texts": fingerprint(texts)})
        done = parts.read_parts(parts_dir, ["row", "vector"])
        if len(done):
            rows = done["row"].to_numpy(dtype=np.int64)
            out = np.zeros((len(texts), len(done["vector"].iloc[0])), dtype=np.float32)
            out[rows] = np.stack(done["vector"].to_numpy())
            todo = np.setdiff1d(todo, rows)
            bar.update(len(rows))
            log.info("embed: %d of %d rows already in %s, %d to go", len(rows), len(texts), parts_dir,
                     len(todo))  # fmt: skip
    if len(todo):
        init_ray(quiet=True)
        quiet_ray_data()
        frame = pd.DataFrame({"row": todo, "text": [texts[i] for i in todo]})
        ds = ray.data.from_pandas(parts.one_block_per_batch(frame, part_rows)).map_batches(
            EncodeBatch,
            fn_constructor_kwargs={"encoder": encoder.__dict__},
            batch_size=part_rows,
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=1,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}},
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            vecs = np.asarray(batch["vector"], dtype=np.float32)
            rows = np.asarray(batch["row"], dtype=np.int64)
            if out is None:
                out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
            out[rows] = vecs
            if parts_dir is not None:
                parts.write_part(parts_dir, pd.DataFrame({"row": rows, "vector": list(vecs)}))
            bar.update(len(vecs))
    bar.close()
    assert out is not None
    return out


def build_variant(
    paths: ArtifactPaths, variant: str, index: IndexConfig, encoder: EncoderConfig, force: bool = False
) -> dict[str, Any]:
    df = item_texts(paths, variant)
    digest = fingerprint(df["item_id"].tolist(), df["text"].tolist(), asdict(index), asdict(encoder))
    folder = paths.index_dir(variant)
    info_path = folder / "index.json"
    if not force and info_path.is_file() and json.loads(info_path.read_text()).get("inputs") == digest:
        log.info("%s: unchanged, reusing %s", variant, folder)
        return json.loads(info_path.read_text())
    t0 = time.perf_counter()
    parts_dir = folder.with_name(f"{variant}.embed_parts")
    vectors = embed_texts(df["text"].tolist(), encoder, parts_dir=parts_dir)
    t1 = time.perf_counter()
    retriever = FaissRetriever.build(vectors, df["item_id"].tolist(), index)
    t2 = time.perf_counter()
    meta = {"variant": variant, "inputs": digest, "encoder": encoder.model or "packaged all-MiniLM-L6-v2",
            "embed_s": round(t1 - t0, 2), "build_s": round(t2 - t1, 3)}  # fmt: skip
    retriever.save(folder, meta)
    shutil.rmtree(parts_dir)  # the vectors are in the index folder now
    return json.loads(info_path.read_text())


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """This stage's options (the global --artifacts, --dataset, -v/-q come from the q2rec command)."""
    ap.add_argument("--text", default="both", choices=[*VARIANTS, "both"])
    ap.add_argument("--kind", default="auto", choices=["auto", "flat", "hnsw", "ivf"],
                    help="exact (flat), approximate (hnsw, ivf), or auto: flat up to --exact-max-items, "
                    "IVF above (default)")  # fmt: skip
    ap.add_argument("--exact-max-items", type=int, default=IndexConfig.exact_max_items)
    ap.add_argument("--target-recall", type=float, default=IndexConfig.target_recall,
                    help="IVF: probe the fewest lists that reach this recall@10 (default %(default)s)")  # fmt: skip
    ap.add_argument(
        "--bf16", action="store_true", help="encode in bfloat16 (faster on CPUs with AVX512-BF16)"
    )
    ap.add_argument("--encoder", help="sentence-transformers folder or hub id (default: packaged MiniLM)")
    ap.add_argument("--force", action="store_true")


def command(args: argparse.Namespace) -> int:
    """Run the stage on parsed options; returns the exit code."""
    paths = ArtifactPaths.for_dataset(Path(args.dataset).name, args.artifacts)
    variants = BOTH if args.text == "both" else (args.text,)
    try:
        for v in variants:
            index = IndexConfig(kind=args.kind, exact_max_items=args.exact_max_items,
                                target_recall=args.target_recall)  # fmt: skip
            info = build_variant(
                paths, v, index, EncoderConfig(model=args.encoder, bf16=args.bf16), args.force
            )
            print(f"{v}: {info['size']} items x {info['dim']}-d, {info['config']['kind']} index in "
                  f"{paths.index_dir(v)} (embed {info['embed_s']}s, build {info['build_s']}s, "
                  f"recall@10 {info.get('recall_at_10', '?')})")  # fmt: skip
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
