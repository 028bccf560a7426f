"""run_service's process set-up: the garbage-collector tuning every service gets."""

from __future__ import annotations

import json
import subprocess
import sys


def test_tune_gc_freezes_start_up_objects_and_collects_less_often() -> None:
    # In a child process: freezing and thresholds are process-wide and must not leak into pytest.
    code = (
        "import gc, json; from gxami_runtime.service import GC_GEN0_THRESHOLD, tune_gc;"
        "before = gc.get_threshold(); tune_gc();"
        "print(json.dumps([gc.get_freeze_count(), gc.get_threshold(), before, GC_GEN0_THRESHOLD]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    frozen, after, before, wanted = json.loads(out.stdout)
    assert frozen > 1000, "the modules and classes loaded at start-up are frozen"
    assert after == [wanted, before[1], before[2]]
    assert after[0] > before[0]
