"""A model that cannot fit at a size says so before it starts, with the memory it would need."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from actors.cf.base import GIB, ModelTooLarge
from actors.cf.ease import EASE, EASEConfig


def test_ease_refuses_a_million_items_naming_the_memory_and_a_model_that_fits():
    with pytest.raises(ModelTooLarge) as err:
        EASE(EASEConfig(max_memory_gb=16)).check_fits(100_000, 1_000_000)
    msg = str(err.value)
    assert "ease on 100,000 users x 1,000,000 items needs about" in msg
    assert "over the limit of 16.0 GiB (ease.max_memory_gb); use sasrec" in msg
    EASE(EASEConfig(max_memory_gb=16)).check_fits(943, 1_682)  # ML-100K fits


def test_ease_fit_refuses_before_allocating():
    seqs = [np.array([0, 1]), np.array([2, 3])]
    with pytest.raises(ModelTooLarge):
        EASE(EASEConfig(max_memory_gb=1e-9)).fit(seqs, 4)


def test_the_estimate_bounds_the_measured_peak():
    """Measured as the peak resident memory over a fit above the resident memory before it, in a fresh
    process (EASE's item x item work is in torch, whose buffers tracemalloc does not see; the peak is reset
    before the fit through /proc/self/clear_refs, so an import's transient peak does not hide it): the
    estimate is above the real peak and within 3x of it, so a refusal means something."""
    code = textwrap.dedent(r"""
        import re, numpy as np
        from actors.cf.base import ValidationSet
        from actors.cf.ease import EASE, EASEConfig
        rng = np.random.default_rng(0)
        n_users, n_items = 2000, 3000
        seqs = [rng.choice(n_items, 30, replace=False) for _ in range(n_users)]
        valid = ValidationSet(seqs[:100], rng.integers(0, n_items, 100))
        model = EASE(EASEConfig(lambdas=[100.0, 500.0], max_extensions=0))
        def kib(field):
            return int(re.search(field + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1))
        open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from here
        before = kib("VmRSS")
        model.fit(seqs, n_items, valid)
        print((kib("VmHWM") - before) * 1024, model.memory_needed(n_users, n_items))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    peak, need = map(float, out.split())
    assert peak <= need <= 3 * peak, (peak / GIB, need / GIB)


def test_sasrec_refuses_a_sampled_softmax_that_does_not_fit_and_samples_by_default():
    from actors.cf.sasrec import SASRec, SASRecConfig

    with pytest.raises(ModelTooLarge, match=r"sasrec on 100,000 users x 1,000,000 items needs about .* GiB, "
                       r"over the limit of 16.0 GiB \(sasrec.max_memory_gb\); lower sasrec.batch_size, "
                       r"sasrec.max_len or sasrec.negatives"):  # fmt: skip
        SASRec(SASRecConfig(max_memory_gb=16, negatives=100_000, batch_size=512)).check_fits(
            100_000, 1_000_000
        )
    auto = SASRec(SASRecConfig(max_memory_gb=16))  # above full_softmax_max_items: sampled, and it fits
    assert auto.softmax_width(1_000_000) == 1025 and auto.softmax_width(1_682) == 1_682
    assert auto.memory_needed(100_000, 1_000_000) < 2 * GIB
    auto.check_fits(100_000, 1_000_000)
    # the full softmax scores a chunk of positions at a time: its memory does not grow with the batch
    full = [SASRec(SASRecConfig(loss="full", batch_size=b)).memory_needed(6_040, 3_706) for b in (128, 1024)]
    assert full[0] == full[1] < 0.1 * GIB
    with pytest.raises(ValueError, match="sasrec.loss must be 'auto', 'full' or 'sampled', got 'fast'"):
        SASRec(SASRecConfig(loss="fast")).softmax_width(10)
