"""The verify report renders every plot kind from plain numbers, and its JSON holds the same numbers."""

from __future__ import annotations

import json

import numpy as np

from logmac import report


def test_report_with_every_plot(tmp_path):
    rng = np.random.default_rng(0)
    sweep = [{"method": m, "w_bits": b, "metric": 80.0 + b} for m in ("log_dynamic", "linear_mse") for b in (3, 4)]
    area = [{"engine": e, "grid": "log_2", "weight_bits": b, "lanes": n,
             "ratio_vs_int": {"lut4_per_lane": 0.4 * b, "lut4_x_cycles_per_mac": 1.5}}
            for e in ("int", "log", "sched-coded") for b in (3, 4) for n in (16, 32)]
    plots = {
        "sweep": report.plot_metric_vs_bits(sweep, "top-1 (%)", 91.9),
        "hist": report.plot_weight_histogram("conv1", rng.normal(size=500), np.array([-1.0, -0.5, 0.5, 1.0])),
        "errors": report.plot_layer_errors([{"name": "a", "weight_rel_error": 0.1}, {"name": "b", "weight_rel_error": 0.2}]),
        "area": report.plot_compare(area),
    }
    assert all(png.startswith(b"\x89PNG") for png in plots.values())
    results = {"title": "t", "summary": {"mismatches": 0, "top-1": 90.1234}, "layers": [{"name": "a", "macs": 5}],
               "area": area}
    paths = report.write_report(results, plots, tmp_path)
    assert json.loads(paths["json"].read_text())["summary"]["mismatches"] == 0
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64") == 4 and "<h2>Area and Fmax</h2>" in html
    md = paths["markdown"].read_text()
    assert "| top-1 | 90.12 |" in md and (tmp_path / "plot3.png").is_file()
