"""tune_gc (outbox/runtime.py): dispatcher processes collect garbage less often."""

from __future__ import annotations

import gc

from outbox.dispatch.runtime import GC_GEN0_THRESHOLD, tune_gc


def test_tune_gc_raises_only_the_young_generation_threshold() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        tune_gc()
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, 10, 10)
        tune_gc()  # idempotent
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, 10, 10)
        assert gc.isenabled()
    finally:
        gc.set_threshold(*before)
