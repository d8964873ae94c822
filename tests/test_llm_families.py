"""Any causal LM by structure: five tiny random architectures quantized by path, exported, emulated, evaluated."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from logmac.cli import main
from logmac.format import artifact as artifact_io
from logmac.models import calibration_samples, load_model, perplexity
from logmac.models.tiny_lm import ARCHITECTURES, save_tiny_causal_lm
from logmac.quant.llm import ArchitectureError, decoder_blocks

QUANTIZE = ["--w-bits", "4", "--a-bits", "8", "--hardware-approx", "--calib-samples", "8", "--batch-size", "8",
            "--seq-len", "32", "--max-tokens", "96", "--act-init", "percentile"]
EMULATE = ["--limit", "96", "--context", "32", "--stride", "16", "--json"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_quantize_export_emulate_by_path(arch: str, tmp_path) -> None:
    folder = save_tiny_causal_lm(tmp_path / f"tiny-{arch}", arch)
    out = tmp_path / "q.lmq"
    rounding = ["--rounding", "gptq"] if arch in ("qwen2", "opt") else []
    run = CliRunner().invoke(main, ["quantize", "--model", str(folder), *QUANTIZE, *rounding, "-o", str(out),
                                    "--results", str(tmp_path / "r.csv")])
    assert run.exit_code == 0, run.output
    art = artifact_io.load(out)
    assert art.meta["model_path"] == str(folder.resolve()) and art.meta["task"] == "lm"
    assert len(art.layers) == 2 * (6 if arch == "opt" else 7)  # every decoder linear of both layers
    assert art.meta["metrics"]["quant"]["perplexity"] > 1
    emulated = CliRunner().invoke(main, ["emulate", str(out), *EMULATE])
    assert emulated.exit_code == 0, emulated.output
    result = json.loads(emulated.stdout)
    assert result["int_layers"] == len(art.layers) and result["margin"] < 0.02
    if arch != "llama":
        return
    moved = shutil.move(folder, tmp_path / "moved")
    gone = CliRunner().invoke(main, ["emulate", str(out), *EMULATE])
    assert gone.exit_code != 0 and "not found" in gone.output and "Traceback" not in gone.output
    again = CliRunner().invoke(main, ["emulate", str(out), *EMULATE, "--path", str(moved)])
    assert again.exit_code == 0 and json.loads(again.stdout)["emulator_ppl"] == result["emulator_ppl"]


def test_windows_start_with_bos(tmp_path) -> None:
    folder = str(save_tiny_causal_lm(tmp_path / "tiny", "llama"))
    loaded = load_model(folder, device="cpu")
    bos = loaded.tokenizer.bos_token_id
    calib = calibration_samples(folder, 4, seq_len=16, tokenizer=loaded.tokenizer)
    assert calib.shape == (4, 16) and (calib[:, 0] == bos).all() and (calib[:, 1:] != bos).all()
    seen = []

    class Uniform(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            seen.append(ids[0, 0].item())
            return torch.zeros(*ids.shape, 5)

    assert perplexity(Uniform(), torch.arange(1, 40) % 5, context=8, stride=4, bos_token_id=0) == pytest.approx(5.0)
    assert set(seen) == {0}


def test_unknown_structure_is_refused_by_name(tmp_path) -> None:
    from logmac.models.tv_compat import import_torchvision

    import_torchvision()
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=50, n_positions=32))
    with pytest.raises(ArchitectureError, match=r"transformer\.h\.0\.attn\.c_attn \(Conv1D\)"):
        decoder_blocks(gpt2)
    with pytest.raises(ArchitectureError, match="no ModuleList of decoder layers"):
        decoder_blocks(torch.nn.Sequential(torch.nn.Linear(4, 4)))


@pytest.mark.parametrize("case, message", [
    ("missing", "model folder .*missing not found"),
    ("bad_gguf", "GGUF file .*bad.gguf cannot be read by the installed transformers"),
    ("no_tokenizer", "the tokenizer of model folder .* cannot be loaded"),
])
def test_bad_model_input_is_one_clear_line(case: str, message: str, tmp_path) -> None:
    target = tmp_path / case
    if case == "bad_gguf":
        target = tmp_path / "bad.gguf"
        target.write_bytes(b"GGUF" + bytes(60))
    elif case == "no_tokenizer":
        save_tiny_causal_lm(target, "llama")
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (target / name).unlink()
    run = CliRunner().invoke(main, ["quantize", "--model", str(target), *QUANTIZE])
    assert run.exit_code != 0 and "Traceback" not in run.output
    error = [line for line in run.output.splitlines() if line.startswith("Error")]
    assert len(error) == 1 and re.search(message, error[0]), run.output


def test_lm_table_quick_smoke(tmp_path) -> None:
    """benchmarks/lm_table.py --quick: learned-rounding rows with and without group exponents on a tiny random
    Llama, as CI runs it."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "lm_table.py"
    out = tmp_path / "table.md"
    names = ["uniform GPTQ+AdaRound", "log GPTQ+LLR", "log GPTQ+LLR +group exp"]
    subprocess.run([sys.executable, str(script), "--quick", "--bits", "3", "--rows", *names, "--results",
                    str(tmp_path / "r.csv"), "-o", str(out)], check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 3 |")]
    assert [r.split(" | ")[1] for r in rows] == names
    assert all(float(r.split(" | ")[2]) > 1 for r in rows)
    bits = {r.split(" | ")[1]: float(r.split(" | ")[4]) for r in rows}
    assert bits["log GPTQ+LLR +group exp"] > bits["log GPTQ+LLR"]  # the group exponents are counted
    assert out.read_text().count("- W3 log GPTQ+LLR vs uniform GPTQ+AdaRound:") == 1
