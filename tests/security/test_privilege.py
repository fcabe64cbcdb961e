"""No way up: setuid, su, namespaces, mounts, tracing, kernel keyrings, eBPF, device nodes."""

from tests.security.battery import MARKER, WALK, attack, released

LIBC = """
    import ctypes, os, evalgate
    print("{marker}")
    libc = ctypes.CDLL(None, use_errno=True)
    def ok(ret):
        return 1 if ret == 0 or (ret > 0) else 0
"""


def syscall_attack(stack, body: str, metric: str) -> float:
    return released(attack(stack, LIBC.format(marker=MARKER) + body, [metric]))[metric]


def test_setuid_binaries_give_nothing(stack):
    m = released(
        attack(
            stack,
            WALK
            + f"""
import os, stat, subprocess, evalgate
print("{MARKER}")
setuid = [p for p, st in every_file(("/proc", "/sys")) if st.st_mode & (stat.S_ISUID | stat.S_ISGID)]
became_root = 0
for p in setuid:
    try:
        out = subprocess.run([p, "-c", "id -u"], capture_output=True, text=True, timeout=5).stdout
        became_root += out.strip() == "0"
    except (OSError, subprocess.SubprocessError):
        pass
uid = os.getuid()
evalgate.report({{"became_root": became_root, "uid_unchanged": uid == os.geteuid() and uid >= 300000}})
""",
            ["became_root", "uid_unchanged"],
        )
    )
    assert m == {"became_root": 0.0, "uid_unchanged": 1.0}


def test_su_to_root(stack):
    m = released(
        attack(
            stack,
            f"""
        import subprocess, evalgate
        print("{MARKER}")
        became = 0
        for cmd in (["su", "-c", "id -u"], ["su", "root", "-c", "id -u"], ["sudo", "id", "-u"]):
            try:
                r = subprocess.run(cmd, input="\\n\\n", capture_output=True, text=True, timeout=5)
                became += r.stdout.strip() == "0"
            except (OSError, subprocess.SubprocessError):
                pass
        evalgate.report({{"became_root": became}})
    """,
            ["became_root"],
        )
    )
    assert m["became_root"] == 0


def test_unshare_user_namespace(stack):
    assert (
        syscall_attack(
            stack,
            """
    n = sum(ok(libc.unshare(flag)) for flag in (0x10000000, 0x20000, 0x40000000, 0x20000000))
    evalgate.report({"unshared": n})
    """,
            "unshared",
        )
        == 0
    )


def test_mount(stack):
    assert (
        syscall_attack(
            stack,
            """
    n = ok(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None)) + ok(libc.mount(b"proc", b"/tmp", b"proc", 0, None))
    n += ok(libc.umount2(b"/suite", 2))
    evalgate.report({"mounted": n})
    """,
            "mounted",
        )
        == 0
    )


def test_ptrace_attach_to_init(stack):
    assert (
        syscall_attack(
            stack,
            """
    PTRACE_ATTACH, PTRACE_SEIZE = 16, 0x4206
    n = ok(libc.ptrace(PTRACE_ATTACH, 1, 0, 0)) + ok(libc.ptrace(PTRACE_SEIZE, 1, 0, 0))
    import subprocess, time
    child = subprocess.Popen(["sleep", "30"])
    n += ok(libc.ptrace(PTRACE_ATTACH, child.pid, 0, 0))
    # process_vm_readv on our own child: refused by seccomp, not just by permissions
    n += ok(libc.syscall(310, child.pid, 0, 0, 0, 0, 0))
    child.kill()
    evalgate.report({"traced": n})
    """,
            "traced",
        )
        == 0
    )


def test_keyctl_and_add_key(stack):
    assert (
        syscall_attack(
            stack,
            """
    KEYCTL_GET_KEYRING_ID = 0
    n = ok(libc.syscall(250, KEYCTL_GET_KEYRING_ID, -3, 0))  # keyctl
    n += ok(libc.syscall(248, b"user", b"evalgate", b"x", 1, -3))  # add_key
    evalgate.report({"keys": n})
    """,
            "keys",
        )
        == 0
    )


def test_bpf_and_perf_and_userfaultfd(stack):
    assert (
        syscall_attack(
            stack,
            """
    import ctypes
    attr = ctypes.create_string_buffer(128)
    n = ok(libc.syscall(321, 0, attr, 128))  # bpf(BPF_MAP_CREATE)
    n += ok(libc.syscall(298, attr, 0, -1, -1, 0))  # perf_event_open
    n += ok(libc.syscall(323, 0))  # userfaultfd
    n += ok(libc.syscall(425, 16, attr))  # io_uring_setup
    evalgate.report({"kernel_surfaces": n})
    """,
            "kernel_surfaces",
        )
        == 0
    )


def test_mknod_device_gives_no_device(stack):
    """runc: mknod of a device fails (no CAP_MKNOD). gVisor: the node can be made in its own tmpfs,
    but no host device is behind it, so opening it fails. Counted: devices that could be read."""
    assert (
        syscall_attack(
            stack,
            """
    import stat
    usable = 0
    for path, kind, dev in (("/tmp/mem", stat.S_IFCHR, (1, 1)), ("/tmp/kmem", stat.S_IFCHR, (1, 2)),
                            ("/tmp/port", stat.S_IFCHR, (1, 4)), ("/tmp/kmsg", stat.S_IFCHR, (1, 11)),
                            ("/tmp/sda", stat.S_IFBLK, (8, 0)), ("/output/mem", stat.S_IFCHR, (1, 1))):
        try:
            os.mknod(path, 0o666 | kind, os.makedev(*dev))
            fd = os.open(path, os.O_RDONLY)
            usable += len(os.read(fd, 16)) > 0
        except OSError:
            pass
    evalgate.report({"devices": usable})
    """,
            "devices",
        )
        == 0
    )


def test_chroot_personality_and_open_by_handle(stack):
    assert (
        syscall_attack(
            stack,
            """
    n = ok(libc.chroot(b"/tmp"))
    n += ok(libc.personality(0x0400000)) if libc.personality(0xffffffff) != 0x0400000 else 0  # READ_IMPLIES_EXEC
    import ctypes
    handle = ctypes.create_string_buffer(128)
    ctypes.memmove(handle, (128).to_bytes(4, "little"), 4)
    n += ok(libc.syscall(303, -100, b"/", handle, ctypes.byref(ctypes.c_int()), 0))  # name_to_handle_at
    n += ok(libc.syscall(304, -100, handle, 0))  # open_by_handle_at
    evalgate.report({"escapes": n})
    """,
            "escapes",
        )
        == 0
    )


def test_no_capabilities_at_all(stack):
    m = released(
        attack(
            stack,
            f"""
        import evalgate
        print("{MARKER}")
        caps = {{}}
        for line in open("/proc/self/status"):
            if line.startswith(("CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp:")):
                k, v = line.split(":")
                caps[k] = int(v.strip(), 16) if k.startswith("Cap") else int(v)
        # gVisor's /proc does not show NoNewPrivs: -1 there
        evalgate.report({{"effective": caps["CapEff"], "permitted": caps["CapPrm"], "bounding": caps["CapBnd"],
                          "no_new_privs": caps.get("NoNewPrivs", -1), "seccomp_mode": caps.get("Seccomp", -1)}})
    """,
            ["effective", "permitted", "bounding", "no_new_privs", "seccomp_mode"],
        )
    )
    nnp = 1.0 if stack.settings.docker_runtime == "runc" else -1.0
    assert m == {"bounding": 0.0, "effective": 0.0, "no_new_privs": nnp, "permitted": 0.0, "seccomp_mode": 2.0}
