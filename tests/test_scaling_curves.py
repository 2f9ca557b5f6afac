"""Test-time scaling curves read from the evaluations: latency per model size, means over seeds."""
import json

import pytest

from opdbench.report.figures import plot_test_time_scaling, read_scaling, summarize_scaling


def evaluation(tmp_path, model, seed, parameters, seconds_per_step, steps, passes):
    m = {"task": "math", "model": model, "kind": "method", "seed": seed,
         "generation": {"parameters": parameters, "seconds_per_decode_step": seconds_per_step},
         "test_time_scaling": {"b": {"k": [1, 2], "pass": passes, "maj": [passes[0], passes[0]],
                                     "decode_steps": steps}}}
    path = tmp_path / f"{model}{seed}.json"
    path.write_text(json.dumps(m))
    return path


def test_latency_uses_the_median_seconds_per_step_of_models_of_one_size(tmp_path):
    files = [evaluation(tmp_path, "student", 0, 100, 0.010, [10, 12], [0.2, 0.3]),
             evaluation(tmp_path, "opd", 0, 100, 0.030, [20, 30], [0.4, 0.5]),  # ran while the machine was busy
             evaluation(tmp_path, "opd", 1, 100, 0.020, [20, 30], [0.6, 0.7]),
             evaluation(tmp_path, "teacher", 0, 400, 0.050, [10, 10], [0.9, 0.9])]
    scaling = read_scaling(files)
    # Size 100: median of 0.010, 0.030, 0.020 = 0.020 s per step, for every student alike.
    opd = scaling[(scaling.model == "opd") & (scaling.seed == 0)].set_index("k")
    assert opd.latency_s.tolist() == pytest.approx([20 * 0.020, 30 * 0.020]) and opd["pass"].tolist() == [40.0, 50.0]
    assert scaling[scaling.model == "teacher"].latency_s.tolist() == pytest.approx([0.5, 0.5])
    summary = summarize_scaling(scaling).set_index(["model", "k"])
    assert summary.loc[("opd", 2), "pass_mean"] == pytest.approx(60.0)
    assert summary.loc[("opd", 2), "pass_std"] == pytest.approx(14.142, abs=1e-3) and summary.loc[("opd", 2), "seeds"] == 2
    plot_test_time_scaling(summarize_scaling(scaling), tmp_path / "f.png", "t")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
