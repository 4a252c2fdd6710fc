"""``benchmarks/gpu_suite.py --tiny`` runs every section on the CPU and writes its JSON and Markdown (the script, not
its speed: the figures themselves need a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO

SECTIONS = ["throughput", "methods", "degradation", "loader", "eval", "overhead", "ddp"]
METHODS = ["baseline", "batch_cr", "siamese_cr", "guided_cnn", "dcr_stage2", "ipunet", "rim"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu_suite")
    env = os.environ | {"PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--tiny", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "gpu_suite.json").read_text()), (out / "gpu_suite.md").read_text()


def test_every_section_runs_and_is_recorded(suite: tuple[dict, str]) -> None:
    results, _ = suite
    assert list(results["sections"]) == SECTIONS
    for name, section in results["sections"].items():
        assert section["status"] == "done", (name, section.get("error"), section.get("traceback"))
        assert section["seconds"] >= 0
    env = results["environment"]
    assert env["device"] == "cpu" and env["torch"] and env["bf16_peak_tflops"] is None
    assert results["settings"]["tiny"] and results["command"].endswith("--out " + results["settings"]["out"])


def test_figures_are_measured_in_the_run(suite: tuple[dict, str]) -> None:
    sections = suite[0]["sections"]
    throughput = {(row["model"], row.get("compile")): row for row in sections["throughput"]["rows"]}
    eager = throughput[("iresnet50 + ArcFace", False)]
    assert eager["status"] == "measured" and eager["images_per_s"] > 0 and eager["train_gflop_per_image"] > 0
    assert eager["bf16_peak_fraction_%"] is None  # a CPU has no entry in the table of peaks
    assert throughput[("iresnet50 + ArcFace", True)]["reason"] == "--no-compile"
    dlib = [row for row in sections["throughput"]["rows"] if row["model"].startswith("dlib_resnet")]
    assert dlib and all(row.get("status") in ("measured", "skipped") for row in dlib)
    assert all(row.get("reason") for row in dlib if row["status"] == "skipped")  # a skip says why
    methods = {row["method"]: row for row in sections["methods"]["rows"]}
    assert list(methods) == METHODS
    assert all(row["status"] == "measured" and row["images_per_s"] > 0 for row in methods.values()), methods
    assert sections["degradation"]["rows"][0]["share_%"] > 0
    workers = [row["workers"] for row in sections["loader"]["rows"]]
    assert workers == ["-", 0, 1] and sections["loader"]["training_need_images_per_s"] > 0
    assert sections["eval"]["max_acc_difference"] == 0 and sections["eval"]["speedup"] > 0
    assert sections["overhead"]["max_loss_difference"] == 0 and sections["overhead"]["ratio"] > 0
    assert sections["ddp"]["backend"] == "gloo" and sections["ddp"]["agree"]


def test_markdown_has_the_headline_and_every_section(suite: tuple[dict, str]) -> None:
    _, text = suite
    assert text.startswith("# crossres GPU suite")
    assert "| figure | goal | value | verdict |" in text
    for name in SECTIONS:
        assert f"## {name} (done" in text
    assert "Lightning / plain PyTorch" in text and "fraction of the bf16 peak" in text


def test_bf16_peaks_by_device_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_suite

    assert gpu_suite.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_suite.bf16_peak_tflops("NVIDIA H200") == 989.0
    assert gpu_suite.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_suite.bf16_peak_tflops("Tesla T4") is None and gpu_suite.bf16_peak_tflops(None) is None
    sys.modules.pop("gpu_suite", None)
