"""Floods stay capped and operator-only; nothing survives from one job to the next."""

from tests.security.battery import MARKER, attack, released


def flood(stream: str) -> str:
    return f"""
        import sys, evalgate
        line = ("{MARKER}" * 20 + "\\n").encode()
        for _ in range(200_000):  # about 70 MB
            sys.{stream}.buffer.write(line)
        sys.{stream}.flush()
        evalgate.report({{"done": 1}})
    """


def test_stdout_flood(stack):
    job = attack(stack, flood("stdout"), ["done"])
    assert released(job) == {"done": 1.0}
    log = stack.operator_log(job["id"])
    assert MARKER in log and len(log.encode()) < stack.settings.log_cap_bytes + 4096


def test_stderr_flood(stack):
    job = attack(stack, flood("stderr"), ["done"])
    assert released(job) == {"done": 1.0}
    assert len(stack.operator_log(job["id"]).encode()) < stack.settings.log_cap_bytes + 4096


PLANT = """
    import os, evalgate
    for d in ("/tmp", "/dev/shm", "/output", "/run/evalgate"):
        try:
            open(os.path.join(d, "planted-7f3a9c"), "w").write("x")
        except OSError:
            pass
    x, _ = evalgate.load_dataset()
    evalgate.predict(x[:30])
    evalgate.report({"planted": 1})
"""

LOOK = """
    import os, evalgate
    places = ("/tmp", "/dev/shm", "/output", "/run/evalgate")
    found = sum(os.path.exists(os.path.join(d, "planted-7f3a9c")) for d in places)
    x, _ = evalgate.load_dataset()
    evalgate.predict(x[:1])
    evalgate.report({"found": found})
"""


def test_nothing_persists_to_the_next_job(stack):
    assert released(attack(stack, PLANT, ["planted"])) == {"planted": 1.0}
    second = attack(stack, LOOK, ["found"])
    assert released(second) == {"found": 0.0}
    # a fresh sidecar too: its query count starts from zero
    usage = stack.usage(second["id"])
    assert (usage["rows"], usage["requests"]) == (1, 1)
