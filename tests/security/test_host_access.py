"""The host, the engine and the model file are out of sight."""

from tests.security.battery import MARKER, WALK, attack, released


def test_no_engine_or_containerd_socket_anywhere(stack):
    m = released(
        attack(
            stack,
            WALK
            + f"""
import os, stat, evalgate
print("{MARKER}")
found = sum(stat.S_ISSOCK(st.st_mode) and not p.startswith("/run/evalgate/") for p, st in every_file(("/proc", "/sys")))
for p in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
          "/var/run/containerd/containerd.sock", "/run/docker/plugins"):
    found += os.path.exists(p)
evalgate.report({{"sockets": found}})
""",
            ["sockets"],
        )
    )
    assert m["sockets"] == 0


def test_proc_1_root_shows_only_the_container(stack):
    m = released(
        attack(
            stack,
            f"""
        import os, evalgate
        print("{MARKER}")
        host_only = ("/var/lib/docker", "/etc/docker", "/usr/sbin/dockerd", "/usr/bin/containerd", "/work",
                     "/root/.cache")
        seen = sum(os.path.exists("/proc/1/root" + p) or os.path.exists(p) for p in host_only)
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                seen += "dockerd" in open(f"/proc/{{pid}}/cmdline").read()
            except OSError:
                pass
        evalgate.report({{"host_paths": seen}})
    """,
            ["host_paths"],
        )
    )
    assert m["host_paths"] == 0


def test_mountinfo_reveals_no_model(stack):
    sha = stack.client.get("/v1/models", headers=stack.operator).json()[0]["sha256"]
    m = released(
        attack(
            stack,
            f"""
        import evalgate
        print("{MARKER}")
        text = open("/proc/self/mountinfo").read()
        evalgate.report({{"model_mounts": text.count(".onnx") + text.count("{sha}") + text.count("/model")}})
    """,
            ["model_mounts"],
        )
    )
    assert m["model_mounts"] == 0


def test_environ_of_every_process_holds_no_secret(stack):
    m = released(
        attack(
            stack,
            f"""
        import os, evalgate
        print("{MARKER}")
        hits = 0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                env = open(f"/proc/{{pid}}/environ", "rb").read()
            except OSError:
                continue
            for needle in (b"DATABASE", b"BROKER", b"postgres", b"redis://", b"SIGNING", b"eg_", b"DOCKER_HOST"):
                hits += needle in env
        evalgate.report({{"secrets": hits}})
    """,
            ["secrets"],
        )
    )
    assert m["secrets"] == 0


def test_model_file_cannot_be_found_by_content(stack):
    m = released(
        attack(
            stack,
            WALK
            + f"""
import stat, evalgate
print("{MARKER}")
needle = b"evalgate" + b"-demo"  # the model's producer name, built so this file does not contain it
def is_model(p, st):
    try:
        return stat.S_ISREG(st.st_mode) and (p.endswith(".onnx") or needle in open(p, "rb").read(4096))
    except OSError:
        return False
evalgate.report({{"model_files": sum(is_model(p, st) for p, st in every_file())}})
""",
            ["model_files"],
        )
    )
    assert m["model_files"] == 0


def test_no_writes_outside_output(stack):
    m = released(
        attack(
            stack,
            f"""
        import os, evalgate
        print("{MARKER}")
        written = 0
        for d in ["/", "/suite", "/data", "/run/evalgate", "/opt/venv", "/etc", "/home", "/var/tmp", "/root",
                  "/usr/local"]:
            try:
                with open(os.path.join(d, "pwned"), "w") as f:
                    f.write("x")
                written += 1
            except OSError:
                pass
        try:
            open("/data/dataset.npz", "ab").write(b"x"); written += 1
        except OSError:
            pass
        evalgate.report({{"written": written}})
    """,
            ["written"],
        )
    )
    assert m["written"] == 0
