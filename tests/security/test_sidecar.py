"""The model socket is the job's one channel: garbage does not crash it, it leaks no weights, and it
stops answering at the budget."""

from tests.security.battery import MARKER, attack, failed_as, released

RAW = """
    import json, socket, struct, evalgate
    print("{marker}")
    def frame(header, body=b""):
        raw = json.dumps(header).encode() if isinstance(header, dict) else header
        return struct.pack(">II", len(raw), len(body)) + raw + body
    def call(data):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect("/run/evalgate/model.sock")
        s.sendall(data)
        try:
            head = s.recv(8, socket.MSG_WAITALL)
            hl, bl = struct.unpack(">II", head)
            return json.loads(s.recv(hl, socket.MSG_WAITALL))
        except (OSError, struct.error, ValueError):
            return {{"error": "closed"}}
        finally:
            s.close()
"""


def sidecar_attack(stack, body: str, metrics: list[str], **extra) -> dict:
    return attack(stack, RAW.format(marker=MARKER) + body, metrics, **extra)


def test_malformed_frames_get_errors_and_the_sidecar_keeps_serving(stack):
    m = released(
        sidecar_attack(
            stack,
            """
    codes = [call(frame(b"\\xff\\xfe{")).get("error"), call(frame(b"[1, 2]")).get("error"),
             call(frame({"op": "predict", "inputs": [{"name": "features", "dtype": "object", "shape": [1]}]}))
             .get("error"),
             call(frame({"op": "predict", "inputs": [{"name": "features", "dtype": "float32", "shape": [10, 16]}]},
                        b"short")).get("error")]
    x, _ = evalgate.load_dataset()
    still = evalgate.predict(x[:4]).shape[0]
    evalgate.report({"bad_frame": codes.count("bad_frame"), "served_after": still})
    """,
            ["bad_frame", "served_after"],
        )
    )
    assert m["bad_frame"] == 4 and m["served_after"] == 4
    # The sidecar counted the garbage (the SDK never sends any): a hard-rule trip for the partner.
    trips = stack.client.get("/v1/partners/acme/suspension", headers=stack.operator).json()["trips_today"]
    assert trips.get("protocol_abuse", 0) >= 1


def test_oversized_frame_closes_only_that_connection(stack):
    m = released(
        sidecar_attack(
            stack,
            """
    big = call(struct.pack(">II", 16, 512 << 20) + b'{"op":"predict"}')
    x, _ = evalgate.load_dataset()
    evalgate.report({"too_large": big.get("error") == "too_large", "served_after": evalgate.predict(x[:2]).shape[0]})
    """,
            ["too_large", "served_after"],
        )
    )
    assert m == {"served_after": 2.0, "too_large": 1.0}


def test_unknown_operations_reveal_no_weights(stack):
    m = released(
        sidecar_attack(
            stack,
            """
    answers = [call(frame({"op": op})) for op in ("weights", "initializers", "export", "dump", "../model.onnx")]
    meta = call(frame({"op": "metadata"}))
    evalgate.report({"unknown_op": sum(a.get("error") == "unknown_op" for a in answers),
                     "meta_bytes": len(json.dumps(meta))})
    """,
            ["unknown_op", "meta_bytes"],
        )
    )
    # Names, dtypes, shapes, the frame limits and the inference configuration: a few hundred bytes, no weights.
    assert m["unknown_op"] == 5 and m["meta_bytes"] < 600


def test_wrong_inputs_are_refused_by_code(stack):
    m = released(
        sidecar_attack(
            stack,
            """
    x, _ = evalgate.load_dataset()
    codes = []
    for inputs in ({"nope": x[:2]}, {"features": x[:2].astype("float64")}, {"features": x[:2, :5]}):
        try:
            evalgate._conn().predict(inputs)
        except evalgate.ModelError as e:
            codes.append(e.code)
    evalgate.report({"refused": len(set(codes))})
    """,
            ["refused"],
        )
    )
    assert m["refused"] == 3  # unknown_input, dtype_mismatch, shape_mismatch


def test_exhausting_the_query_budget_ends_the_job(stack):
    failed_as(
        attack(
            stack,
            """
        import evalgate
        x, _ = evalgate.load_dataset()
        while True:
            evalgate.predict(x[:25])
    """,
            ["never"],
            resources={"query_budget": 100},
        ),
        "query_budget_exceeded",
    )


def test_budget_refusal_is_final_even_if_the_job_catches_it(stack):
    m = released(
        attack(
            stack,
            """
        import evalgate
        x, _ = evalgate.load_dataset()
        answered = refused = 0
        for _ in range(20):
            try:
                evalgate.predict(x[:10]); answered += 1
            except evalgate.BudgetExceeded:
                refused += 1
        evalgate.report({"answered": answered, "refused": refused})
    """,
            ["answered", "refused"],
            resources={"query_budget": 50},
        )
    )
    assert m == {"answered": 5.0, "refused": 15.0}


def test_a_batched_request_is_charged_batch_by_batch_and_refused_whole(stack):
    """evalgate.predict(x, batch_size=b) is one request that the sidecar runs batch by batch: it
    costs the rows and one request per batch, as sending each batch would, and a span that does not
    fit the budget is refused before any of it runs."""
    job = attack(
        stack,
        """
        import evalgate
        x, _ = evalgate.load_dataset()
        rows = len(evalgate.predict(x[:100], batch_size=32))    # 4 batches
        rows += len(evalgate.predict(x[:300], batch_size=64))   # 5 batches: 400 rows spent
        refused = 0
        try:
            evalgate.predict(x[:200], batch_size=50)            # 600 > 520: refused whole
        except evalgate.BudgetExceeded:
            refused += 1
        rows += len(evalgate.predict(x[:120], batch_size=40))   # 3 batches: exactly 520
        evalgate.report({"rows": rows, "refused": refused})
    """,
        ["rows", "refused"],
        resources={"query_budget": 520},
    )
    assert released(job) == {"rows": 520.0, "refused": 1.0}
    usage = stack.usage(job["id"])
    assert (usage["rows"], usage["requests"]) == (520, 12)


def test_handing_the_sidecar_hostile_descriptors(stack):
    """Only a memfd sealed against shrinking is mapped (a shrinkable one could SIGBUS the sidecar);
    a file, a pipe or an unsealed memfd is refused, and the sidecar keeps serving."""
    m = released(
        sidecar_attack(
            stack,
            """
    import fcntl, os
    def attach(fd):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect("/run/evalgate/model.sock")
        raw = json.dumps({"op": "attach", "slot": 0}).encode()
        try:
            socket.send_fds(s, [struct.pack(">II", len(raw), 0) + raw], [fd])
        except OSError:  # gVisor passes no descriptors between sandboxes at all
            return {"ok": False}
        hl, bl = struct.unpack(">II", s.recv(8, socket.MSG_WAITALL))
        reply = json.loads(s.recv(hl, socket.MSG_WAITALL))
        s.close()
        return reply
    unsealed = os.memfd_create("x", os.MFD_ALLOW_SEALING); os.ftruncate(unsealed, 1 << 20)
    r, w = os.pipe()
    hostile = [os.open("/data/dataset.npz", os.O_RDONLY), r, unsealed]
    refused = sum(not attach(fd).get("ok") for fd in hostile)
    x, _ = evalgate.load_dataset()
    evalgate.report({"refused": refused, "served_after": evalgate.predict(x[:3]).shape[0]})
    """,
            ["refused", "served_after"],
        )
    )
    assert m == {"refused": 3.0, "served_after": 3.0}


def test_transfer_files_are_read_as_batches_only(stack):
    """gVisor's by-value path: a batch in a file of the job's transfer volume. A slot's file that is a
    link (to the sidecar's own model file), a FIFO or too short is a bad frame, never read through;
    under runc there is no transfer volume, and a file request is a bad frame too. Then a real batch
    sent by value is answered exactly as the same rows named (under gVisor, through the file)."""
    m = released(
        sidecar_attack(
            stack,
            """
    import os
    import numpy as np
    d = "/run/evalgate-transfer"
    volume = os.path.isdir(d)
    if volume:
        os.symlink("/model/model.onnx", d + "/slot-0")
        try:
            os.mkfifo(d + "/slot-1")
        except OSError:
            pass
        with open(d + "/slot-2", "wb") as f:
            f.write(b"\\0" * 100)
    spec = [{"name": "features", "dtype": "float32", "shape": [1000, 16]}]
    codes = [call(frame({"op": "predict", "file": True, "slot": s, "inputs": spec})).get("error") for s in range(4)]
    if volume:
        for s in range(3):
            os.unlink(d + f"/slot-{s}")
    x, _ = evalgate.load_dataset()
    rows = np.arange(4000) % len(x)
    sent = np.array(x)[rows]  # 4000 rows of the job's own: 256 KB sent by value
    same = np.array_equal(evalgate.predict(sent, batch_size=500), evalgate.predict(x[rows], batch_size=500))
    through_file = volume and os.path.getsize(d + "/slot-0") == sent.nbytes
    evalgate.report({"bad_frame": codes.count("bad_frame"), "same": int(same), "through_file": int(through_file)})
    """,
            ["bad_frame", "same", "through_file"],
            resources={"query_budget": 20_000},
        )
    )
    assert m["bad_frame"] == 4 and m["same"] == 1
    assert m["through_file"] == (0 if stack.settings.docker_runtime == "runc" else 1)
