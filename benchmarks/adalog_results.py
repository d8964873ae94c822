"""AdaLog results: the house ViT at W3A3 / W4A4 / W6A6 (AdaLog vs uniform activations, same weights; fake-quant
and integer emulator top-1) and MiniLM-L6 at W4A4 (sentence-embedding cosine to FP).

Each measured row is kept as JSON under ``results/adalog/`` (a rerun skips rows already there unless
``--force``), so rows can be measured by several processes and the table rendered once from all of them.
The table is printed and written between the ``adalog-table`` markers of docs/adalog.md.

    python benchmarks/adalog_results.py --bits 3 4 6                 # ViT rows, full 10k test set
    python benchmarks/adalog_results.py --bits 3 4 --w-bits 8        # W8A3 / W8A4
    python benchmarks/adalog_results.py --bits 8 --w-bits 8 --target-bits 3   # only Softmax/GELU at 3 bits
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

from logmac.backends.adalog import compare_vit
from logmac.experiments.adalog import adalog_registry_model
from logmac.models import calibration_samples, fashion_mnist, load_model
from logmac.models.evaluate import predict
from logmac.quant.methods.adalog.quantizers import FPCS_BUDGETS
from logmac.quant.methods.adalog.vit import AdaLogConfig, activation_errors, quantize_vit

ROOT = Path(__file__).resolve().parent.parent
ROWS = ROOT / "results" / "adalog"
DOC = ROOT / "docs" / "adalog.md"
ERROR_IMAGES = 500  # test images whose post-Softmax / post-GELU tensors measure the quantization error
BEGIN, END = "<!-- adalog-table begin -->", "<!-- adalog-table end -->"


def vit_row(w_bits: int, a_bits: int, target_bits: int | None, acts: str, weights: str, fpcs: str, images: torch.Tensor,
            labels: torch.Tensor, fp_logits: torch.Tensor) -> dict:
    """Calibrate the house ViT at W{w_bits}A{a_bits} (post-Softmax / post-GELU at ``target_bits`` if given); score
    fake-quant and emulator on the same test images (top-1, agreement with the FP predictions, KL(FP || quantized));
    measure the post-Softmax / post-GELU tensor errors."""
    cfg = AdaLogConfig(w_bits=w_bits, a_bits=a_bits, acts=acts, weights=weights, fpcs=fpcs, target_bits=target_bits)
    model = load_model("vit_fmnist").model
    calib = calibration_samples("vit_fmnist", cfg.calib_samples, seed=cfg.seed)
    res = quantize_vit(model, calib, cfg)
    start = time.perf_counter()
    errors = activation_errors(res.model, images[:ERROR_IMAGES])
    error_seconds = time.perf_counter() - start
    start = time.perf_counter()
    cmp = compare_vit(res.model, images, labels, reference=fp_logits)
    fp_top1 = 100 * float((fp_logits.argmax(1) == labels).float().mean())
    return {"model": "vit_fmnist", "w_bits": w_bits, "a_bits": a_bits, "target_bits": cfg.act_bits, "acts": acts,
            "weights": weights,
            "fpcs": fpcs, "fpcs_rounds": FPCS_BUDGETS[fpcs].rounds, "fp_top1": fp_top1,
            **{k: v for k, v in cmp.items() if k != "acc_bits"}, "max_acc_bits": max(cmp["acc_bits"].values()),
            "error_images": min(ERROR_IMAGES, len(images)), "errors": errors,
            **{f"{k}_rel_mse": sum(v) / len(v) for k, v in errors.items()},
            "calib_seconds": round(res.seconds, 1), "error_seconds": round(error_seconds, 1),
            "eval_seconds": round(time.perf_counter() - start, 1), "quantizers": res.quantizers}


def minilm_row(acts: str, weights: str, limit: int | None, calib_samples: int, fpcs: str,
               fpcs_rounds: int | None) -> dict:
    cfg = AdaLogConfig(w_bits=4, a_bits=4, acts=acts, weights=weights, calib_samples=calib_samples, fpcs=fpcs,
                       fpcs_rounds=fpcs_rounds)
    fpcs_rounds = FPCS_BUDGETS[fpcs].rounds if fpcs_rounds is None else fpcs_rounds
    _, row = adalog_registry_model("minilm_l6_v2", cfg, eval_limit=limit)
    return {"model": "minilm_l6_v2", "bits": 4, "acts": acts, "weights": weights, "cosine": row["q_cosine"],
            "sentences": row["sentences"], "calib_samples": calib_samples, "fpcs": fpcs, "fpcs_rounds": fpcs_rounds,
            "calib_seconds": row["quant_seconds"],
            "eval_seconds": round(row["total_seconds"] - row["quant_seconds"], 1)}


def row_path(model: str, w_bits: int, a_bits: int, target_bits: int | None, acts: str, weights: str, limit: int | None,
             fpcs: str) -> Path:
    targets = f"T{target_bits}" if target_bits is not None else ""
    return ROWS / f"{model}_W{w_bits}A{a_bits}{targets}_{weights}_{acts}_{limit or 'all'}_{fpcs}.json"


def wa_label(r: dict) -> str:
    """W/A of a row; rows whose post-Softmax / post-GELU bits differ from the other activations' say so."""
    label = f"W{r['w_bits']}A{r['a_bits']}"
    target = r.get("target_bits", r["a_bits"])
    return label if target == r["a_bits"] else f"{label}, Softmax/GELU {target}-bit"


def measure(key: tuple, make, force: bool) -> None:
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
                 key=lambda r: (-r["images"], r["weights"] != "uniform", r.get("target_bits", r["a_bits"]) != r["a_bits"],
                                r["w_bits"] != r["a_bits"], r["a_bits"], r["w_bits"],
                                r.get("target_bits", r["a_bits"]), r["acts"]))
    lines = ["| model | W/A | weights | activations (Softmax, GELU) | FP top-1 | fake-quant top-1 | agreement with FP | "
             "KL(FP ‖ Q) | Softmax rel. MSE | GELU rel. MSE | A·V rel. MSE | fc2 rel. MSE | emulator top-1 | "
             "emulator = fake-quant | max logit diff | images | FPCS | calibration s | eval s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in vit:
        lines.append(f"| vit_fmnist | {wa_label(r)} | {r['weights']} | {r['acts']} | {r['fp_top1']:.2f} | "
                     f"{r['fake_top1']:.2f} | {r['fake_agreement']:.2f} % | {r['fake_kl']:.4f} | "
                     f"{r['softmax_rel_mse']:.4f} | {r['gelu_rel_mse']:.4f} | {r['attn_v_rel_mse']:.4f} | "
                     f"{r['fc2_rel_mse']:.4f} | {r['emulator_top1']:.2f} | {r['same_prediction']:.2f} % | "
                     f"{r['max_logit_diff']:.2g} | {r['images']} | {r['fpcs']} | {r['calib_seconds']} | "
                     f"{round(r['eval_seconds'] + r['error_seconds'], 1)} |")
    bert = [r for r in rows if r["model"] == "minilm_l6_v2"]
    if bert:
        lines += ["", "| model | W/A | weights | activations (Softmax, GELU) | cosine to FP | sentences | "
                  "calibration sentences | FPCS | FPCS rounds | calibration s | eval s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(bert, key=lambda r: (r["weights"], r["acts"])):
            lines.append(f"| minilm_l6_v2 | W4A4 | {r['weights']} | {r['acts']} | {r['cosine']:.4f} | {r['sentences']} | "
                         f"{r['calib_samples']} | {r.get('fpcs', 'reduced')} | {r['fpcs_rounds']} | "
                         f"{r['calib_seconds']} | {r['eval_seconds']} |")
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
    parser.add_argument("--bits", type=int, nargs="*", default=[], help="ViT activation bit-widths to measure (3 4 6)")
    parser.add_argument("--w-bits", type=int, nargs="*", default=[],
                        help="ViT weight bit-widths (default: equal to the activation bits)")
    parser.add_argument("--target-bits", type=int, nargs="*", default=[],
                        help="bits of the post-Softmax / post-GELU quantizers only (default: the activation bits)")
    parser.add_argument("--fpcs", default="spec", choices=sorted(FPCS_BUDGETS), help="FPCS candidate budget")
    parser.add_argument("--weights", nargs="+", default=["uniform"], choices=["uniform", "log"])
    parser.add_argument("--acts", nargs="+", default=["adalog", "uniform"], choices=["adalog", "uniform"])
    parser.add_argument("--limit", type=int, default=None, help="test images (default: all 10k)")
    parser.add_argument("--minilm", action="store_true", help="measure the MiniLM W4A4 rows")
    parser.add_argument("--sentences", type=int, default=None, help="MiniLM evaluation sentences (default 256)")
    parser.add_argument("--calib-samples", type=int, default=32, help="MiniLM calibration sentences")
    parser.add_argument("--fpcs-rounds", type=int, default=None, help="MiniLM FPCS refinement rounds (default: the budget's)")
    parser.add_argument("--force", action="store_true", help="re-measure rows already stored")
    parser.add_argument("--render", action="store_true", help="only render the table from stored rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--quick", action="store_true", help="the ViT at W4A4 on 64 images, reduced FPCS budget, rows "
                        "and page in a scratch folder (CI smoke)")
    args = parser.parse_args()
    if args.quick:
        import tempfile

        global ROWS, DOC
        scratch = Path(tempfile.mkdtemp())
        ROWS, DOC = scratch / "rows", scratch / "adalog.md"
        args.bits, args.limit, args.fpcs, args.force = [4], 64, "reduced", True
    torch.set_num_threads(args.threads)
    if not args.render:
        if args.bits:
            images, labels = fashion_mnist("test", limit=args.limit)
            start = time.perf_counter()
            fp_logits = predict(load_model("vit_fmnist").model, images, desc="FP")
            print(f"FP logits of {len(images)} images: {time.perf_counter() - start:.1f} s")
        for a_bits in args.bits:
            for w_bits in args.w_bits or [a_bits]:
                for target in args.target_bits or [None]:
                    for weights in args.weights:
                        for acts in args.acts:
                            measure(("vit_fmnist", w_bits, a_bits, target, acts, weights, args.limit, args.fpcs),
                                    lambda w=w_bits, a=a_bits, t=target, ac=acts, wt=weights: vit_row(
                                        w, a, t, ac, wt, args.fpcs, images, labels, fp_logits), args.force)
        if args.minilm:
            for weights in args.weights:
                for acts in args.acts:
                    measure(("minilm_l6_v2", 4, 4, None, acts, weights, args.sentences, args.fpcs),
                            lambda a=acts, w=weights: minilm_row(a, w, args.sentences, args.calib_samples,
                                                                 args.fpcs, args.fpcs_rounds), args.force)
    table = render()
    print(table)
    write_doc(table)


if __name__ == "__main__":
    main()
