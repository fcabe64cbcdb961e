"""Generates evalgate.json, the seccomp profile of both sandbox containers.

    python sandbox_images/seccomp/build_profile.py   # rewrites both JSON files; a test checks they agree

evalgate-runc.json is for runc. evalgate-runsc.json is the same list for gVisor, which applies it
inside its own kernel (runsc --oci-seccomp) with one difference, explained at clone3 below.

The profile is an allowlist: any syscall not listed fails with EPERM. It starts from what CPython,
numpy, OpenBLAS and onnxruntime need, and leaves out everything below that Docker's default profile
allows (or allows given a capability), each with the reason. Capabilities are dropped too, but a
syscall that is never reachable cannot carry a kernel bug into the host.
"""

from __future__ import annotations

import json
from pathlib import Path

EPERM = 1
ENOSYS = 38

ALLOWED = ["accept", "accept4", "access", "alarm", "arch_prctl", "bind", "brk", "capget", "capset", "chdir", "chmod", "chown", "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_pwait", "epoll_pwait2", "epoll_wait", "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fallocate", "fchdir", "fchmod", "fchmodat", "fchown", "fchownat", "fcntl", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstatfs", "fsync", "ftruncate", "futex", "futex_time64", "futex_waitv", "getcpu", "getcwd", "getdents", "getdents64", "getegid", "geteuid", "getgid", "getgroups", "getitimer", "get_mempolicy", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresuid", "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt", "gettid", "gettimeofday", "getuid", "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "ioctl", "ioprio_get", "kill", "lchown", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr", "lremovexattr", "lseek", "lsetxattr", "lstat", "madvise", "membarrier", "memfd_create", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mprotect", "mremap", "msync", "munlock", "munlockall", "munmap", "nanosleep", "newfstatat", "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64", "pselect6", "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "removexattr", "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity", "sched_yield", "seccomp", "select", "sendfile", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsuid", "setgid", "setgroups", "setitimer", "setpgid", "setpriority", "setregid", "setresgid", "setresuid", "setreuid", "setrlimit", "set_robust_list", "setsid", "setsockopt", "set_tid_address", "setuid", "setxattr", "shutdown", "sigaltstack", "signalfd", "signalfd4", "socketpair", "splice", "stat", "statfs", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes", "vfork", "wait4", "waitid", "write", "writev"]

# Left out although Docker's default profile allows them (some only with a capability we drop anyway).
REMOVED = {
    # Reading or writing another process's memory or registers: the classic way to lift secrets out
    # of a neighbour, and a large kernel surface.
    "ptrace": "debugging other processes reads their memory",
    "process_vm_readv": "reads another process's memory directly",
    "process_vm_writev": "writes another process's memory directly",
    "kcmp": "compares kernel objects of other processes (an info leak used for exploit staging)",
    "pidfd_getfd": "copies a file descriptor out of another process",
    # Execution-domain switches have re-enabled dangerous legacy behaviour (e.g. READ_IMPLIES_EXEC).
    "personality": "switches execution domain; no evaluation code needs it",
    # Kernel keyrings are shared kernel state with a long CVE history and no use in a job.
    "keyctl": "kernel keyring access",
    "add_key": "kernel keyring access",
    "request_key": "kernel keyring access",
    # eBPF and perf are the richest kernel attack surfaces reachable from user space.
    "bpf": "loads programs into the kernel",
    "perf_event_open": "kernel performance counters: side channels and a long CVE history",
    "userfaultfd": "lets a process pause kernel memory accesses, the standard race-widening exploit tool",
    "io_uring_setup": "io_uring bypasses seccomp for the operations it carries and has many CVEs",
    "io_uring_enter": "see io_uring_setup",
    "io_uring_register": "see io_uring_setup",
    # Namespaces: new user namespaces hand unprivileged code capabilities over fresh kernel objects.
    "unshare": "creates namespaces (user namespaces re-grant capabilities inside them)",
    "setns": "joins other namespaces",
    # Mounting: changes what the filesystem means; none of it is needed and all of it needs caps.
    "mount": "mounts filesystems",
    "umount": "unmounts filesystems",
    "umount2": "unmounts filesystems",
    "pivot_root": "changes the root filesystem",
    "chroot": "changes the root directory",
    "fsopen": "new mount API",
    "fsconfig": "new mount API",
    "fsmount": "new mount API",
    "fspick": "new mount API",
    "move_mount": "new mount API",
    "open_tree": "new mount API",
    "mount_setattr": "new mount API",
    # open_by_handle_at is the 'shocker' container escape: it opens host files by inode handle.
    "open_by_handle_at": "opens files by handle, escaping bind mounts (the 'shocker' escape)",
    "name_to_handle_at": "the other half of open_by_handle_at",
    # The machine itself.
    "kexec_load": "loads a new kernel",
    "kexec_file_load": "loads a new kernel",
    "reboot": "reboots",
    "init_module": "loads a kernel module",
    "finit_module": "loads a kernel module",
    "delete_module": "unloads a kernel module",
    "swapon": "enables swap",
    "swapoff": "disables swap",
    "acct": "process accounting to a file",
    "quotactl": "filesystem quotas",
    "syslog": "reads the kernel log",
    "iopl": "raw I/O port access",
    "ioperm": "raw I/O port access",
    "vhangup": "hangs up a terminal",
    "clock_settime": "sets the clock",
    "clock_adjtime": "adjusts the clock",
    "settimeofday": "sets the clock",
    "adjtimex": "adjusts the clock",
    "sethostname": "renames the host",
    "setdomainname": "renames the domain",
    "lookup_dcookie": "kernel profiling interface",
    "fanotify_init": "watches the whole filesystem",
    "modify_ldt": "x86 segment tables: old bugs, no use",
    "uselib": "obsolete loader",
    # NUMA placement that affects other tenants' memory.
    "mbind": "places memory on NUMA nodes",
    "set_mempolicy": "NUMA policy",
    "migrate_pages": "moves another process's pages",
    "move_pages": "moves another process's pages",
    # System V IPC and POSIX message queues: shared state no evaluation needs.
    "shmget": "System V shared memory",
    "shmat": "System V shared memory",
    "shmctl": "System V shared memory",
    "shmdt": "System V shared memory",
    "semget": "System V semaphores",
    "semop": "System V semaphores",
    "semctl": "System V semaphores",
    "semtimedop": "System V semaphores",
    "msgget": "System V messages",
    "msgsnd": "System V messages",
    "msgrcv": "System V messages",
    "msgctl": "System V messages",
    "mq_open": "POSIX message queues",
    "mq_unlink": "POSIX message queues",
    "mq_timedsend": "POSIX message queues",
    "mq_timedreceive": "POSIX message queues",
    "mq_notify": "POSIX message queues",
    "mq_getsetattr": "POSIX message queues",
    "ioprio_set": "I/O priority of other processes",
    "sched_setparam": "scheduling of other processes",
    "sched_setscheduler": "real-time scheduling",
    "sched_setattr": "real-time scheduling",
    "memfd_secret": "memory hidden from the kernel's own inspection",
    "process_madvise": "advises on another process's memory",
}

# The namespace flags of clone(2): refused, so clone can make threads and processes only.
CLONE_NAMESPACE_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10


def profile(runtime: str) -> dict:
    overlap = set(ALLOWED) & set(REMOVED)
    assert not overlap, overlap
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        ],
        "syscalls": [
            {"names": sorted(ALLOWED), "action": "SCMP_ACT_ALLOW"},
            # Threads and processes only: no new namespaces.
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
            },
            # clone3 passes its flags in memory seccomp cannot read. Under runc: answer ENOSYS, so libc
            # falls back to clone(2), whose flags are checked above. Under gVisor, clone3 is served by
            # gVisor's own kernel (the host never sees it), and this gVisor release ignores errnoRet,
            # which would leave libc without its fallback: there it is allowed.
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}
            if runtime == "runc"
            else {"names": ["clone3"], "action": "SCMP_ACT_ALLOW"},
            # Sockets: unix (the model socket) and IP (loopback only, under network none). No netlink,
            # packet, vsock, AF_ALG or other families, each its own kernel attack surface.
            *(
                {
                    "names": ["socket"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": af, "op": "SCMP_CMP_EQ"}],
                }
                for af in (AF_UNIX, AF_INET, AF_INET6)
            ),
        ],
    }


RUNTIMES = ("runc", "runsc")


def render(runtime: str) -> str:
    return json.dumps(profile(runtime), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    for rt in RUNTIMES:
        (Path(__file__).parent / f"evalgate-{rt}.json").write_text(render(rt))
