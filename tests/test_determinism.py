"""Same settings and seed, same artifact: across two runs and across 1 and 2 torch threads.

The tensors (codes, tables, scales, every extra) must be byte-identical.  The header is identical except
``meta.calibration`` run time and peak memory, which measure the run rather than describe the model;
they are removed before comparing, and nothing else is.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.numpy import load as st_load
from test_quant_pipeline import run

from logmac.format import artifact as art
from logmac.quant import QuantConfig

MEASURED = ("seconds", "peak_mib")


def _payload(threads: int) -> tuple[dict, dict[str, bytes]]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = art.to_bytes(run(QuantConfig(method="log_dynamic", w_bits=4, batch_size=16, seed=5)).artifact)
    finally:
        torch.set_num_threads(before)
    n = int.from_bytes(data[:8], "little")
    header = json.loads(json.loads(data[8:8 + n])["__metadata__"][art.HEADER_KEY])
    header.pop("checksum")
    calibration = header["meta"].get("calibration", {})
    for key in MEASURED:
        calibration.pop(key)  # KeyError if the header stops recording them: then update this test
    tensors = {k: v.dtype.str.encode() + str(v.shape).encode() + v.tobytes() for k, v in st_load(data).items()}
    return header, tensors


@pytest.mark.parametrize("threads", [(1, 1), (1, 2)], ids=["two runs", "1 vs 2 threads"])
def test_rtn_log_dynamic_is_reproducible(threads: tuple[int, int]) -> None:
    (h1, t1), (h2, t2) = (_payload(n) for n in threads)
    assert sorted(t1) == sorted(t2)
    differing = [k for k in t1 if t1[k] != t2[k]]
    assert differing == [], f"tensors differ: {differing}"
    assert h1 == h2
