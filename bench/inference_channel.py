"""Throughput of the model channel: in-process onnxruntime vs. the same model behind the sidecar,
over the per-job unix socket. Prints rows/s and their ratio.

    make bench-channel        (or: .venv/bin/python -m bench.inference_channel)

Both sides are measured by one process inside a real job container (the real sandbox: same cgroup,
CPUs, seccomp and socket as a job), pass after pass in alternation: a pass of in-process onnxruntime
over all rows, then a pass through the sidecar, then the other way round. Each round gives one ratio
of the two, and the median ratio is the figure: this host is noisy (other tenants), and a round's
passes share its conditions. Only for this benchmark, the job container runs the sidecar image (it
has onnxruntime) with the model in the suite directory; the channel side calls the client exactly
as the SDK does: the dataset's rows named rather than sent (evalgate.predict(x, batch_size=b) is one
request that the sidecar runs batch by batch), an array of the job's own sent by value (through a
memfd under runc, a transfer file under gVisor), the same with every byte in the socket, and one
request per batch (a job that slices its own batches). It also compares the sidecar's memory peak
with the model's footprint in a process of its own. Both sides use
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
from typing import Any

import numpy as np

ROWS = 10_000
BATCHES = (1, 32, 256, 1024)


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
import json, os, resource, socket, subprocess, sys, time
import numpy as np
import onnxruntime as ort
from evalgate_inference import rows
from evalgate_inference.client import Client

x = rows.load("/data/dataset.npz")  # what evalgate.load_features() does: dataset rows, read-only
values = np.array(x)  # the same numbers as an array of the job's own: sent by value
n = len(x)
opts = ort.SessionOptions()
opts.intra_op_num_threads = THREADS
opts.inter_op_num_threads = 1
sess = ort.InferenceSession("/suite/mlp.onnx", sess_options=opts, providers=["CPUExecutionProvider"])
client = Client(os.environ["EVALGATE_SOCKET"])
client.metadata()
in_socket = Client(os.environ["EVALGATE_SOCKET"], shared_memory=False)  # neither memfd nor transfer file
in_socket.metadata()


def in_process(b):
    for i in range(0, n, b):
        sess.run(None, {"x": values[i:i + b]})


def rows_named(b):  # evalgate.predict(x, batch_size=b): one request naming all rows
    client.predict_rows(rows.reference(x), b, depth=2)


def by_value(b):  # evalgate.predict(arr, batch_size=b) for an array that is not dataset rows
    client.predict_batched({"x": values}, b, depth=2)


def by_value_in_socket(b):  # the same, with every byte through the socket: what the side channel saves
    in_socket.predict_batched({"x": values}, b, depth=2)


def per_request(b):  # for i in ...: evalgate.predict(x[i:i + b]): one request per batch, one at a time
    for i in range(0, n, b):
        client.predict_rows(rows.reference(x[i:i + b]), b, depth=1)


runs = {}
sides = [in_process, rows_named, by_value, by_value_in_socket, per_request]
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
# The floor of one request, with no model: two processes in the job container over a socketpair,
# both blocking, on one CPU and on two. "bare": one byte each way. "protocol": the channel's own
# client and framing (a request naming 32 rows, an answer of 32 x 10 floats), nothing else.
def round_trips(protocol, cpus):
    a, b = socket.socketpair()
    echo = os.fork()
    if echo == 0:
        a.close()
        os.sched_setaffinity(0, {cpus[0]})
        if protocol:
            from evalgate_inference.protocol import FrameReader, describe, write_frame
            out = np.zeros((32, 10), np.float32)
            meta = {"ok": True, "metadata": {"outputs": [{"name": "y", "shape": ["n", 10], "dtype": "float32"}]},
                    "limits": {"max_body": 1 << 26, "max_batch": 4096}}
            reader = FrameReader(b)
            while (frame := reader.read()) is not None:
                if frame[0].get("op") == "metadata":
                    write_frame(b, meta)
                else:
                    write_frame(b, {"ok": True, "outputs": [describe("y", out)]}, [out])
        else:
            while d := b.recv(64):
                b.send(d)
        os._exit(0)
    b.close()
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[1]})
    if protocol:
        from evalgate_inference import client as channel
        connect, channel.connect = channel.connect, lambda *args: a
        c = channel.Client("socketpair")
        channel.connect = connect
        c.metadata()
        one = lambda i: c.predict_rows(rows.reference(x[i:i + 32]), 32, depth=1)
    else:
        def one(i):
            a.send(b"x")
            a.recv(64)
    for i in range(300):
        one(i * 32)
    t0 = time.perf_counter()
    for i in range(3000):
        one((i * 32) % (n - 32))
    took = (time.perf_counter() - t0) / 3000
    a.close()
    os.waitpid(echo, 0)
    os.sched_setaffinity(0, mask)
    return took


cpus = sorted(os.sched_getaffinity(0))
round_trip = {
    f"{kind}, {where}": round_trips(kind == "protocol", pair)
    for kind in ("bare", "protocol")
    for where, pair in (("one CPU", (cpus[0], cpus[0])), ("two CPUs", (cpus[0], cpus[-1])))
}
# The model's own footprint in a process of its own: load it, run every row at batch 256, peak RSS.
ALONE = chr(10).join([
    "import resource, numpy as np, onnxruntime as ort",
    "from evalgate_inference import rows",
    "x = rows.Features('/data/dataset.npz').array()",  # the dataset as the sidecar reads it: mapped
    f"o = ort.SessionOptions(); o.intra_op_num_threads = {THREADS}; o.inter_op_num_threads = 1",
    "s = ort.InferenceSession('/suite/mlp.onnx', sess_options=o, providers=['CPUExecutionProvider'])",
    "[s.run(None, {'x': x[i:i + 256]}) for i in range(0, len(x), 256)]",
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)",
])
alone = int(subprocess.run([sys.executable, "-c", ALONE], capture_output=True, text=True, check=True).stdout)
with open(os.environ["EVALGATE_OUTPUT"], "w") as f:
    json.dump({"runs": runs, "in_process_peak_bytes": alone, "round_trip_s": round_trip}, f)
"""


def measure(model: Path, x: np.ndarray, cpus: float, rounds: int, runtime: str) -> dict[str, Any]:
    """Rows/s of each side (in_process, rows_named, by_value, by_value_in_socket, per_request) in each round of
    alternating passes, by batch size; the model's peak in a process of its own, and the sidecar's
    peak (the container's memory statistics)."""
    from service.sandbox.client import docker_client
    from service.sandbox.runner import Sandbox
    from service.sandbox.runtimes import resolve
    from service.sandbox.spec import JobSandbox, Limits

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
        passes = (rounds + 1) * 4 * len(BATCHES)  # passes through the sidecar (four sides), each of all rows
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
            sidecar_threads=threads,  # the same onnxruntime threads (and CPUs) on both sides
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
    result = json.loads(outcome.result)
    return {
        "runs": {int(b): runs for b, runs in result["runs"].items()},
        "in_process_peak_bytes": result["in_process_peak_bytes"],
        "sidecar_peak_bytes": outcome.sidecar_memory_peak,
        "round_trip_s": result["round_trip_s"],
    }


# Goals, by runtime: (side, batch, the least ratio to in-process onnxruntime).
GOALS = {
    "runsc": [("rows_named", 256, 0.90), ("by_value", 256, 0.60)],
    "runc": [("rows_named", 256, 0.90), ("per_request", 256, 0.95), ("per_request", 32, 0.85)],
}
MEMORY_GOAL = 2.0  # the sidecar's peak over the model's own footprint in a process of its own


def machine() -> str:
    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        "unknown CPU",
    )
    return f"{os.cpu_count()} cores ({model})"


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
        measured = measure(make_mlp(Path(tmp) / "mlp.onnx"), x, args.cpus, args.rounds, args.runtime)
    runs = measured["runs"]
    print(
        f"inference channel: MLP 784-512-10 float32, {ROWS} rows per pass, onnxruntime threads="
        f"{max(1, math.ceil(args.cpus))}, runtime={args.runtime}, {machine()}; {args.rounds} rounds of alternating "
        f"passes per batch size, measured in a job container; sidecar request-rate cap off"
    )
    print("rows named:  evalgate.predict(x, batch_size=b) on dataset rows: one request naming them (nothing sent)")
    print("by value:    evalgate.predict(arr, batch_size=b) on an array of the job's own: its bytes are sent")
    side_channel = "a sealed memfd" if args.runtime == "runc" else "a transfer file in a shared tmpfs volume"
    print(f"             (a batch of 64 KiB or more goes through {side_channel})")
    print("in socket:   the same by value, every byte through the socket (the client asks for no side channel)")
    print("per request: evalgate.predict(x[i:i+b]) in a loop: one request per batch, one at a time")
    print(
        f"{'batch':>6} {'in-process rows/s':>18} {'rows named':>11} {'by value':>9} {'in socket':>10}"
        f" {'per request':>12}  (ratios, median)"
    )
    ratios: dict[tuple[str, int], float] = {}
    for b in BATCHES:
        base = statistics.median(r["in_process"] for r in runs[b])
        for side in ("rows_named", "by_value", "by_value_in_socket", "per_request"):
            ratios[side, b] = statistics.median(r[side] / r["in_process"] for r in runs[b])
        print(
            f"{b:>6} {base:>18,.0f} {ratios['rows_named', b]:>11.2f} {ratios['by_value', b]:>9.2f}"
            f" {ratios['by_value_in_socket', b]:>10.2f} {ratios['per_request', b]:>12.2f}"
        )
    # What one request per batch could reach if a request cost nothing but a round trip: the model's
    # time per batch in process, over that plus the round trip. A goal above a ceiling cannot be met
    # by a request path that costs that much.
    trips = measured["round_trip_s"]
    print("per request, the floor: round trips between two processes in the job container, no model")
    print(
        f"{'round trip':>18} {'us':>5}   ceiling of one request per batch, at batch "
        + " ".join(f"{b:>5}" for b in BATCHES)
    )
    ceilings: dict[str, dict[int, float]] = {}
    for what, rtt in trips.items():
        ceilings[what] = {
            b: statistics.median(b / r["in_process"] / (b / r["in_process"] + rtt) for r in runs[b]) for b in BATCHES
        }
        print(f"{what:>18} {rtt * 1e6:>5.0f}   {'':>43}" + " ".join(f"{ceilings[what][b]:>5.2f}" for b in BATCHES))
    ok = True
    for side, b, goal in GOALS[args.runtime]:
        met = ratios[side, b] >= goal
        ok &= met
        print(
            f"goal ({args.runtime}): {side} at batch {b} >= {goal:.2f}: {ratios[side, b]:.2f}"
            f" ({'meets' if met else 'MISSES'})"
            + (
                f"; ceilings: {ceilings['bare, two CPUs'][b]:.2f} (a bare round trip across CPUs),"
                f" {ceilings['protocol, one CPU'][b]:.2f} (the channel's own, on one CPU)"
                if side == "per_request"
                else ""
            )
        )
    alone, peak = measured["in_process_peak_bytes"], measured["sidecar_peak_bytes"]
    if peak:
        met = peak <= MEMORY_GOAL * alone
        ok &= met
        print(
            f"goal: sidecar peak <= {MEMORY_GOAL:.0f}x the model in a process of its own: {peak / 2**20:.0f} MiB vs "
            f"{alone / 2**20:.0f} MiB = {peak / alone:.2f}x ({'meets' if met else 'MISSES'})"
        )
    else:
        print("sidecar peak: not reported by this engine (cgroup v2 has no max_usage): memory goal not measured")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
