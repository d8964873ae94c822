"""AdaLog results: the house ViT at W3A3 / W4A4 / W6A6 (AdaLog vs uniform activations, same weights; fake-quant
and integer emulator top-1) and MiniLM-L6 at W4A4 (sentence-embedding cosine to FP).

Each measured row is kept as JSON under ``results/adalog/`` (a rerun skips rows already there unless
``--force``), so rows can be measured by several processes and the table rendered once from all of them.
The table is printed and written between the ``adalog-table`` markers of docs/adalog.md.

    python benchmarks/adalog_results.py --bits 3 4 6                 # ViT rows, full 10k test set
    python benchmarks/adalog_results.py --minilm                     # MiniLM W4A4 rows
    python benchmarks/adalog_results.py --render                     # table only, from the stored rows
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from logmac.models import calibration_samples, evaluate_model, fashion_mnist, load_model
from logmac.quant.adalog_run import adalog_registry_model
from logmac.quant.adalog_vit import AdaLogConfig, quantize_vit
from logmac.sim.adalog import compare_vit

ROOT = Path(__file__).resolve().parent.parent
ROWS = ROOT / "results" / "adalog"
DOC = ROOT / "docs" / "adalog.md"
BEGIN, END = "<!-- adalog-table begin -->", "<!-- adalog-table end -->"


def vit_row(bits: int, acts: str, weights: str, limit: int | None, fp_top1: float) -> dict:
    """Calibrate the house ViT at W{bits}A{bits}, then score fake-quant and emulator on the same test images."""
    cfg = AdaLogConfig(w_bits=bits, a_bits=bits, acts=acts, weights=weights)
    model = load_model("vit_fmnist").model
    calib = calibration_samples("vit_fmnist", cfg.calib_samples, seed=cfg.seed)
    res = quantize_vit(model, calib, cfg)
    images, labels = fashion_mnist("test", limit=limit)
    start = time.perf_counter()
    cmp = compare_vit(res.model, images, labels)
    return {"model": "vit_fmnist", "bits": bits, "acts": acts, "weights": weights, "fp_top1": fp_top1,
            **{k: v for k, v in cmp.items() if k != "acc_bits"}, "max_acc_bits": max(cmp["acc_bits"].values()),
            "calib_seconds": round(res.seconds, 1), "eval_seconds": round(time.perf_counter() - start, 1),
            "quantizers": res.quantizers}


def minilm_row(acts: str, weights: str, limit: int | None, calib_samples: int, fpcs_rounds: int) -> dict:
    cfg = AdaLogConfig(w_bits=4, a_bits=4, acts=acts, weights=weights, calib_samples=calib_samples,
                       fpcs_rounds=fpcs_rounds)
    _, row = adalog_registry_model("minilm_l6_v2", cfg, eval_limit=limit)
    return {"model": "minilm_l6_v2", "bits": 4, "acts": acts, "weights": weights, "cosine": row["q_cosine"],
            "sentences": row["sentences"], "calib_samples": calib_samples, "fpcs_rounds": fpcs_rounds,
            "calib_seconds": row["quant_seconds"],
            "eval_seconds": round(row["total_seconds"] - row["quant_seconds"], 1)}


def row_path(model: str, bits: int, acts: str, weights: str, limit: int | None) -> Path:
    return ROWS / f"{model}_W{bits}A{bits}_{weights}_{acts}_{limit or 'all'}.json"


def measure(key: tuple[str, int, str, str, int | None], make, force: bool) -> None:
    path = row_path(*key)
    if path.exists() and not force:
        print(f"kept {path.relative_to(ROOT)}")
        return
    row = make()
    ROWS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=1) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k != "quantizers"}))


def render() -> str:
    """The markdown table of every stored row."""
    rows = [json.loads(p.read_text()) for p in sorted(ROWS.glob("*.json"))]
    vit = sorted((r for r in rows if r["model"] == "vit_fmnist"),
                 key=lambda r: (-r["images"], r["weights"] != "uniform", r["bits"], r["acts"]))
    lines = ["| model | W/A | weights | activations (Softmax, GELU) | FP top-1 | fake-quant top-1 | emulator top-1 | "
             "same prediction | max logit diff | images | calibration s | fake+emulator eval s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in vit:
        lines.append(f"| vit_fmnist | W{r['bits']}A{r['bits']} | {r['weights']} | {r['acts']} | {r['fp_top1']:.2f} | "
                     f"{r['fake_top1']:.2f} | {r['emulator_top1']:.2f} | {r['same_prediction']:.2f} % | "
                     f"{r['max_logit_diff']:.2g} | {r['images']} | {r['calib_seconds']} | {r['eval_seconds']} |")
    bert = [r for r in rows if r["model"] == "minilm_l6_v2"]
    if bert:
        lines += ["", "| model | W/A | weights | activations (Softmax, GELU) | cosine to FP | sentences | "
                  "calibration sentences | FPCS rounds | calibration s | eval s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(bert, key=lambda r: (r["weights"], r["acts"])):
            lines.append(f"| minilm_l6_v2 | W4A4 | {r['weights']} | {r['acts']} | {r['cosine']:.4f} | {r['sentences']} | "
                         f"{r['calib_samples']} | {r['fpcs_rounds']} | {r['calib_seconds']} | {r['eval_seconds']} |")
    return "\n".join(lines)


def write_doc(table: str) -> None:
    if not DOC.exists() or BEGIN not in DOC.read_text():
        print(f"{DOC} has no {BEGIN} marker; table not written")
        return
    text = DOC.read_text()
    DOC.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), f"{BEGIN}\n{table}\n{END}", text, flags=re.S))
    print(f"wrote the table into {DOC.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", type=int, nargs="*", default=[], help="ViT W/A bit-widths to measure (3 4 6)")
    parser.add_argument("--weights", nargs="+", default=["uniform"], choices=["uniform", "log"])
    parser.add_argument("--acts", nargs="+", default=["adalog", "uniform"], choices=["adalog", "uniform"])
    parser.add_argument("--limit", type=int, default=None, help="test images (default: all 10k)")
    parser.add_argument("--minilm", action="store_true", help="measure the MiniLM W4A4 rows")
    parser.add_argument("--sentences", type=int, default=None, help="MiniLM evaluation sentences (default 256)")
    parser.add_argument("--calib-samples", type=int, default=32, help="MiniLM calibration sentences")
    parser.add_argument("--fpcs-rounds", type=int, default=3, help="MiniLM FPCS refinement rounds")
    parser.add_argument("--force", action="store_true", help="re-measure rows already stored")
    parser.add_argument("--render", action="store_true", help="only render the table from stored rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.render:
        if args.bits:
            fp_top1 = round(evaluate_model(load_model("vit_fmnist").model, "vit_fmnist", limit=args.limit)["top1"], 2)
        for bits in args.bits:
            for weights in args.weights:
                for acts in args.acts:
                    measure(("vit_fmnist", bits, acts, weights, args.limit),
                            lambda b=bits, a=acts, w=weights: vit_row(b, a, w, args.limit, fp_top1), args.force)
        if args.minilm:
            for weights in args.weights:
                for acts in args.acts:
                    measure(("minilm_l6_v2", 4, acts, weights, args.sentences),
                            lambda a=acts, w=weights: minilm_row(a, w, args.sentences, args.calib_samples,
                                                                 args.fpcs_rounds), args.force)
    table = render()
    print(table)
    write_doc(table)


if __name__ == "__main__":
    main()
