"""Throughput of the model channel: in-process onnxruntime vs. the same model behind the sidecar,
over the per-job unix socket. Prints rows/s and their ratio.

    make bench-channel        (or: .venv/bin/python -m bench.inference_channel)

Both sides are measured by one process inside a real job container (the real sandbox: same cgroup,
CPUs, seccomp and socket as a job), pass after pass in alternation: a pass of in-process onnxruntime
over all rows, then a pass through the sidecar, then the other way round. Each round gives one ratio
of the two, and the median ratio is the figure: this host is noisy (other tenants), and a round's
passes share its conditions. Only for this benchmark, the job container runs the sidecar image (it
has onnxruntime) with the model in the suite directory; the channel side calls the client exactly
as the SDK does (the dataset loaded into shared memory; evalgate.predict(x, batch_size=b) is one
request that the sidecar runs batch by batch). For comparison it also prints the ratio of one
request per batch with two in flight, the path of a job that sends its own batches. Both sides use
the same onnxruntime thread count. The per-second request cap is off (a policy, not a cost).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import tempfile
import textwrap
from pathlib import Path

import numpy as np

ROWS = 10_000
BATCHES = (1, 32, 256, 1024)
GOAL_BATCH, GOAL_RATIO = 256, 0.90


def make_mlp(path: Path, seed: int = 0) -> Path:
    """The reference MLP 784→512→10, float32, random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((784, 512)) / 28).astype(np.float32)
    b1 = np.zeros(512, np.float32)
    w2 = (rng.standard_normal((512, 10)) / 22).astype(np.float32)
    b2 = np.zeros(10, np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h0"]),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
            helper.make_node("Relu", ["h1"], ["h2"]),
            helper.make_node("MatMul", ["h2", "w2"], ["o0"]),
            helper.make_node("Add", ["o0", "b2"], ["logits"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 784])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        initializer=[numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


# Runs inside the job container (sidecar image: numpy, onnxruntime, the inference client).
MEASURE = """
import json, os, time
import numpy as np
import onnxruntime as ort
from evalgate_inference.client import Client

with np.load("/data/dataset.npz") as npz:
    x = npz["x"]
n = len(x)
opts = ort.SessionOptions()
opts.intra_op_num_threads = THREADS
opts.inter_op_num_threads = 1
sess = ort.InferenceSession("/suite/mlp.onnx", sess_options=opts, providers=["CPUExecutionProvider"])
client = Client(os.environ["EVALGATE_SOCKET"])
client.metadata()
shared = client.shared_array(x.shape, x.dtype)  # what evalgate.load_dataset() does; None under gVisor
if shared is not None:
    shared[...] = x
xs = x if shared is None else shared


def in_process(b):
    for i in range(0, n, b):
        sess.run(None, {"x": x[i:i + b]})


def channel(b):  # what evalgate.predict(x, batch_size=b) does
    client.predict_batched({"x": xs}, b, depth=2)


def per_request(b):  # one request per batch: two in flight (client.predict_stream), or one at a time at batch 1
    if b == 1:  # evalgate.predict(x[i:i + 1]) in a loop
        for i in range(n):
            client.predict({"x": xs[i:i + 1]})
    else:
        batches = ({"x": xs[i:i + b]} for i in range(0, n, b))
        np.concatenate([out["logits"] for out in client.predict_stream(batches, depth=2)])


runs = {}
sides = [in_process, channel, per_request]
for b in BATCHES:
    for side in sides:
        side(b)  # warm-up
    runs[b] = []
    for r in range(ROUNDS):
        took = {}
        for side in (sides if r % 2 == 0 else sides[::-1]):
            time.sleep(0.2)  # onnxruntime's idle threads stop spinning before the next pass starts
            t0 = time.perf_counter()
            side(b)
            took[side.__name__] = time.perf_counter() - t0
        runs[b].append({k: n / v for k, v in took.items()})
with open(os.environ["EVALGATE_OUTPUT"], "w") as f:
    json.dump(runs, f)
"""


def measure(model: Path, x: np.ndarray, cpus: float, rounds: int, runtime: str) -> dict[int, list[dict[str, float]]]:
    """Rows/s of each side ("in_process", "channel" and "per_request") in each
    round of alternating passes, by batch size."""
    from service.sandbox.client import docker_client
    from service.sandbox.runner import JobSandbox, Limits, Sandbox
    from service.sandbox.runtimes import resolve

    client = docker_client()
    sidecar_image = client.images.get("evalgate-sidecar:latest").id
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.chmod(tmp, 0o755)
        data = tmp / "data.npz"
        np.savez(data, x=x, y=np.zeros(len(x), np.int64))
        suite = tmp / "suite"
        suite.mkdir()
        os.chmod(suite, 0o755)
        shutil.copy(model, suite / "mlp.onnx")
        threads = max(1, math.ceil(cpus))
        (suite / "measure.py").write_text(
            f"BATCHES = {BATCHES!r}\nROUNDS = {rounds}\nTHREADS = {threads}\n" + textwrap.dedent(MEASURE)
        )
        for p in (data, suite / "measure.py", suite / "mlp.onnx"):
            os.chmod(p, 0o644)
        passes = (rounds + 1) * 2 * len(BATCHES)  # passes through the sidecar, each of all rows
        spec = JobSandbox(
            job_id=f"bench-{os.getpid()}",
            job_image=sidecar_image,
            sidecar_image=sidecar_image,
            model_path=model,
            dataset_path=data,
            suite_path=suite,
            entrypoint="measure.py",
            env={},
            command=["/opt/venv/bin/python", "/suite/measure.py"],
            query_budget_rows=ROWS * passes,
            limits=Limits(
                memory_mb=2048,
                cpus=cpus,
                timeout_s=1800,
                max_requests=10_000_000,
                max_batch_rows=4096,
                max_requests_per_s=0,
                result_max_bytes=64 << 10,
            ),
            runtime=resolve(client, runtime),
        )
        sandbox = Sandbox(client, deployment="evalgate-bench")
        try:
            outcome = sandbox.run(spec)
        finally:
            sandbox.remove(spec.job_id)
    if outcome.result is None or outcome.exit_code != 0:
        raise SystemExit(f"the bench job failed: exit {outcome.exit_code}\n{outcome.job_log[-3000:]}")
    return {int(b): runs for b, runs in json.loads(outcome.result).items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpus", type=float, default=float(os.cpu_count() or 1), help="CPUs for onnxruntime on both sides")
    ap.add_argument("--rounds", type=int, default=11, help="rounds of alternating passes per batch size")
    ap.add_argument("--runtime", default="runc", choices=["runc", "runsc"])
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((ROWS, 784)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        runs = measure(make_mlp(Path(tmp) / "mlp.onnx"), x, args.cpus, args.rounds, args.runtime)
    print(
        f"inference channel: MLP 784-512-10 float32, {ROWS} rows per pass, onnxruntime threads="
        f"{max(1, math.ceil(args.cpus))}, runtime={args.runtime}, {args.rounds} rounds of alternating passes "
        f"per batch size, measured in a job container; sidecar request-rate cap off"
    )
    print("channel: what evalgate.predict(x, batch_size=b) does (one request; the sidecar runs it batch by batch)")
    print("per-request: one request per batch, two in flight (client.predict_stream); at batch 1, one at a time")
    print("             (evalgate.predict(x[i:i+1]) in a loop): the path of a job that sends its own batches")
    print(
        f"{'batch':>6} {'in-process rows/s':>18} {'channel rows/s':>15} {'ratio':>6} {'(min-max)':>10}"
        f" {'per-request ratio':>18}"
    )
    ratios = {}
    for b in BATCHES:
        rounds = runs[b]
        base = statistics.median(r["in_process"] for r in rounds)
        side = statistics.median(r["channel"] for r in rounds)
        each = [r["channel"] / r["in_process"] for r in rounds]
        ratios[b] = statistics.median(each)
        per_request = f"{statistics.median(r['per_request'] / r['in_process'] for r in rounds):.2f}"
        print(
            f"{b:>6} {base:>18,.0f} {side:>15,.0f} {ratios[b]:>6.2f} {min(each):>4.2f}-{max(each):.2f}"
            f" {per_request:>18}"
        )
    ratio = ratios[GOAL_BATCH]
    verdict = "meets" if ratio >= GOAL_RATIO else "MISSES"
    print(f"goal: median ratio >= {GOAL_RATIO:.2f} at batch {GOAL_BATCH}: {ratio:.2f} ({verdict})")
    return 0 if ratio >= GOAL_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
