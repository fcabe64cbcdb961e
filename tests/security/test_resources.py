"""Exhaustion: processes, threads, memory, disk, inodes, CPU, time, signals, daemons."""

import time

from tests.security.battery import MARKER, attack, failed_as, released


def contained(stack, job: dict, metric: str) -> None:
    """The bomb stops at the job's limit: EAGAIN at the pids cgroup (runc) or at RLIMIT_NPROC inside
    gVisor's kernel (runsc), and the job goes on. Under gVisor a fork bomb may instead fill the
    cgroup with gVisor's own host threads, which kills the whole sandbox: crashed or oom."""
    if job["state"] == "released":
        assert job["result"]["metrics"][metric] < stack.settings.pids_limit
    else:
        assert stack.settings.docker_runtime == "runsc"
        failed_as(job, "crashed") if job["error_class"] == "crashed" else failed_as(job, "oom")


def test_fork_bomb_stops_at_the_pids_limit(stack):
    job = attack(
        stack,
        f"""
        import os, time, evalgate
        print("{MARKER}")
        children = 0
        for _ in range(5000):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(20)
                os._exit(0)
            children += 1
        evalgate.report({{"children": children}})
    """,
        ["children"],
    )
    contained(stack, job, "children")


def test_thread_bomb_stops_at_the_pids_limit(stack):
    job = attack(
        stack,
        f"""
        import threading, time, evalgate
        print("{MARKER}")
        threads = 0
        stop = threading.Event()
        try:
            for _ in range(5000):
                t = threading.Thread(target=stop.wait, daemon=True)
                t.start()
                threads += 1
        except RuntimeError:
            pass
        stop.set()
        evalgate.report({{"threads": threads}})
    """,
        ["threads"],
    )
    contained(stack, job, "threads")


def test_memory_bomb_is_oom(stack):
    failed_as(
        attack(
            stack,
            """
        blocks = []
        while True:
            blocks.append(bytearray(16 << 20))
    """,
            ["never"],
            resources={"memory_mb": 128},
        ),
        "oom",
    )


def test_a_memory_error_is_oom(stack):
    """At its limit gVisor may refuse an allocation rather than kill: the job's MemoryError is an
    out-of-memory ending too, whichever runtime said it."""
    failed_as(attack(stack, "raise MemoryError('the allocation failed')", ["never"]), "oom")


def test_filling_tmp_stops_at_its_size(stack):
    m = released(
        attack(
            stack,
            f"""
        import evalgate
        print("{MARKER}")
        written = 0
        try:
            with open("/tmp/fill", "wb") as f:
                for _ in range(1024):
                    f.write(b"\\1" * (1 << 20)); f.flush(); written += 1
        except OSError:
            pass
        evalgate.report({{"mib": written}})
    """,
            ["mib"],
            resources={"memory_mb": 1024},
        )
    )
    assert m["mib"] <= stack.settings.tmp_size_mb


def test_filling_output_stops_at_its_cap(stack):
    m = released(
        attack(
            stack,
            f"""
        import os, evalgate
        print("{MARKER}")
        written = 0
        try:
            with open("/output/fill", "wb") as f:
                for _ in range(64):
                    f.write(b"\\0" * (256 << 10)); f.flush(); written += 1
        except OSError:
            pass
        os.remove("/output/fill")
        evalgate.report({{"kib": written * 256}})
    """,
            ["kib"],
        )
    )
    assert m["kib"] <= stack.settings.output_dir_bytes // 1024


def test_inode_exhaustion_stays_in_the_job(stack):
    m = released(
        attack(
            stack,
            f"""
        import os, evalgate
        print("{MARKER}")
        counts = {{}}
        for d in ("/output", "/tmp", "/dev/shm"):
            n = 0
            try:
                for i in range(20_000):
                    open(f"{{d}}/f{{i}}", "w").close(); n += 1
            except OSError:
                pass
            counts[d] = n
            for i in range(n):
                os.remove(f"{{d}}/f{{i}}")
        evalgate.report({{"output_files": counts["/output"], "tmp_files": counts["/tmp"],
                          "shm_files": counts["/dev/shm"]}})
    """,
            ["output_files", "tmp_files", "shm_files"],
            resources={"timeout_s": 120},
        )
    )
    assert m["output_files"] < stack.settings.output_dir_inodes


def test_cpu_spin_is_a_timeout(stack):
    failed_as(
        attack(
            stack,
            f"""
        print("{MARKER}")
        while True:
            pass
    """,
            ["never"],
            resources={"timeout_s": 3},
        ),
        "timeout",
    )


def test_sleeping_forever_is_a_timeout_and_ends_on_time(stack):
    t0 = time.monotonic()
    failed_as(
        attack(
            stack,
            f"""
        import time
        print("{MARKER}")
        time.sleep(10**6)
    """,
            ["never"],
            resources={"timeout_s": 3},
        ),
        "timeout",
    )
    assert time.monotonic() - t0 < 60


def test_ignoring_sigterm_does_not_outlive_the_limit(stack):
    failed_as(
        attack(
            stack,
            f"""
        import signal, time
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        print("{MARKER}")
        while True:
            time.sleep(1)
    """,
            ["never"],
            resources={"timeout_s": 3},
        ),
        "timeout",
    )


def test_double_forked_daemon_cannot_change_the_result(stack):
    m = released(
        attack(
            stack,
            f"""
        import os, time, json, evalgate
        print("{MARKER}")
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(3)  # after the main process has reported and exited
                with open("/output/result.json", "w") as f:
                    json.dump({{"score": 999}}, f)
                os._exit(0)
            os._exit(0)
        evalgate.report({{"score": 1}})
    """,
            ["score"],
        )
    )
    assert m["score"] == 1
