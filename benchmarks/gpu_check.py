"""`make gpu-check`: what a CUDA machine must show before recslm's GPU paths are called tested.

On a machine with a CUDA device it runs, one after the other:

1. the smoke config on the CPU in fp32 (the reference every CPU test uses);
2. the smoke config on the GPU in bf16 (``runtime.device=cuda runtime.dtype=bf16``);
3. the smoke config on the GPU in fp32, for the bf16 speed-up.

and reports: every model's mean test AUC on the GPU in bf16 against the CPU fp32 run (the
bar is the CPU bf16 one: within 0.005), distillation throughput (examples/s of each
student's distill stage) bf16 against fp32 on the GPU, and, if SGLang is installed, whether
SGLang's own server loads the pruned model and the FP8 model of the bf16 run and answers a
``/generate``. It writes ``<out>/gpu-check.json`` and prints the tables. On a machine without
CUDA it says so and exits with status 2 (nothing there to check).

    python benchmarks/gpu_check.py [--out runs/gpu-check] [--config configs/smoke.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
AUC_TOLERANCE = 0.005  # bf16 vs fp32 on the smoke config (the CPU's bar, tests/pipeline/test_precision.py)

RUNS = {
    "cpu-fp32": ["runtime.device=cpu", "runtime.dtype=fp32"],
    "gpu-bf16": ["runtime.device=cuda", "runtime.dtype=bf16"],
    "gpu-fp32": ["runtime.device=cuda", "runtime.dtype=fp32"],
}


def run_pipeline(config: Path, root: Path, overrides: list[str]) -> dict[str, Any]:
    """One ``recslm run`` in its own process and store; its summary.json."""
    command = [sys.executable, "-m", "flows.cli", "run", str(config), "--run-id", "check", "--set", f"run.root={root}"]
    for item in overrides + ["serve.enabled=false", "bench.enabled=false", "registry.enabled=false"]:
        command += ["--set", item]
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True)
    summary = json.loads((root / "check" / "summary.json").read_text())
    summary["_wall_s"] = round(time.perf_counter() - started, 1)
    return summary


def auc_rows(reference: dict[str, Any], candidate: dict[str, Any], tolerance: float = AUC_TOLERANCE) -> list[dict[str, Any]]:
    """Each model of both runs: mean test AUC in each, the difference, and whether it is within ``tolerance``."""
    theirs = {m["name"]: m["auc_mean"] for m in candidate["models"]}
    rows = []
    for model in reference["models"]:
        if model["name"] not in theirs or model["role"] == "baseline":
            continue
        delta = theirs[model["name"]] - model["auc_mean"]
        rows.append({"model": model["name"], "reference": model["auc_mean"], "candidate": theirs[model["name"]], "delta": delta, "within": abs(delta) <= tolerance})
    return rows


def distill_throughput(summary: dict[str, Any]) -> dict[str, float]:
    """Examples per second of each distill stage (student and SFT baseline) in a run."""
    return {name.split(".", 1)[1]: float(record["metrics"]["train_examples_per_s"]) for name, record in summary["stages"].items() if name.startswith("distill.")}


def speedup_rows(fast: dict[str, Any], slow: dict[str, Any]) -> list[dict[str, Any]]:
    """Distill throughput of ``fast`` over ``slow``, per student."""
    a, b = distill_throughput(fast), distill_throughput(slow)
    return [{"student": name, "bf16": a[name], "fp32": b[name], "ratio": a[name] / b[name] if b[name] else float("nan")} for name in sorted(a) if name in b]


def model_folder(summary: dict[str, Any], stage_prefix: str) -> Path | None:
    """The model folder of the first stage record whose name starts with ``stage_prefix``."""
    for name, record in summary["stages"].items():
        if name.startswith(stage_prefix) and (Path(record["uri"]) / "model" / "config.json").is_file():
            return Path(record["uri"]) / "model"
    return None


def sglang_installed() -> bool:
    try:
        import sglang  # noqa: F401
    except ImportError:
        return False
    return True


def sglang_loads(model_dir: Path, port: int, *, timeout_s: float = 600.0) -> dict[str, Any]:
    """Start SGLang's own server on ``model_dir``; whether it comes up healthy and answers one /generate."""
    from recslm.config import ServeConfig
    from recslm.serve.sglang import launch_args

    args = launch_args(ServeConfig(port=port, mem_fraction_static=0.3), str(model_dir), host="127.0.0.1")
    log = model_dir.parent / "sglang.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sglang.launch_server", *args], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    reply = httpx.post(f"{url}/generate", json={"text": "Task: will the member like this movie?\nAnswer:", "sampling_params": {"max_new_tokens": 1}}, timeout=60)
                    return {"model": str(model_dir), "loaded": reply.status_code == 200, "detail": reply.text[:200]}
            except httpx.HTTPError:
                pass
            time.sleep(2)
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        return {"model": str(model_dir), "loaded": False, "detail": f"not healthy (exit {proc.poll()}); end of {log}:\n{tail}"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def markdown(report: dict[str, Any]) -> str:
    lines = [f"GPU: {report['gpu']}", "", f"| model | CPU fp32 | GPU bf16 | delta | within {AUC_TOLERANCE} |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['reference']:.4f} | {r['candidate']:.4f} | {r['delta']:+.4f} | {'yes' if r['within'] else 'NO'} |" for r in report["auc"]]
    lines += ["", "| student | distill examples/s bf16 | fp32 | bf16 / fp32 |", "|---|---|---|---|"]
    lines += [f"| {r['student']} | {r['bf16']:.1f} | {r['fp32']:.1f} | {r['ratio']:.2f}x |" for r in report["throughput"]]
    sglang = [f"SGLang loads {s['model']}: {s['loaded']} ({s['detail'][:120]})" for s in report["sglang"]]
    lines += [""] + (sglang or ["SGLang: not installed, or no pruned / FP8 model in the run"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "gpu-check")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "smoke.yaml")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine.", file=sys.stderr)
        return 2
    summaries = {name: run_pipeline(args.config, args.out / name, overrides) for name, overrides in RUNS.items()}
    report: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "wall_s": {name: s["_wall_s"] for name, s in summaries.items()},
        "auc": auc_rows(summaries["cpu-fp32"], summaries["gpu-bf16"]),
        "throughput": speedup_rows(summaries["gpu-bf16"], summaries["gpu-fp32"]),
        "sglang": [],
    }
    if sglang_installed():
        for prefix in ("prune.", "quantize.fp8"):
            folder = model_folder(summaries["gpu-bf16"], prefix)
            if folder is not None:
                report["sglang"].append(sglang_loads(folder, port=31000 + len(report["sglang"])))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=2))
    print(markdown(report))
    ok = all(r["within"] for r in report["auc"]) and all(s["loaded"] for s in report["sglang"])
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
