"""The one result file: links, special files, sizes and malformed JSON never get past the gate."""

import pytest

from tests.security.battery import MARKER, attack, failed_as, released


def writes(stack, code: str) -> dict:
    return attack(stack, f'print("{MARKER}")\n' + code, ["score"])


def test_symlink_to_a_host_path(stack):
    failed_as(writes(stack, 'import os; os.symlink("/etc/shadow", "/output/result.json")'), "output_rejected")


def test_symlink_to_the_dataset(stack):
    failed_as(writes(stack, 'import os; os.symlink("/data/dataset.npz", "/output/result.json")'), "output_rejected")


def test_hardlink_out_of_the_output_dir_fails(stack):
    failed_as(
        writes(
            stack, 'import os\ntry:\n    os.link("/suite/main.py", "/output/result.json")\nexcept OSError:\n    pass'
        ),
        "missing_output",
    )


def test_fifo(stack):
    job = writes(stack, 'import os; os.mkfifo("/output/result.json")')
    # runc: the FIFO is on the output volume and refused by type. gVisor keeps FIFOs inside its own
    # kernel, so none ever appears on the host: missing. Either way nothing is read from it.
    failed_as(job, "output_rejected" if stack.settings.docker_runtime == "runc" else "missing_output")


def test_directory_named_like_the_result(stack):
    failed_as(writes(stack, 'import os; os.mkdir("/output/result.json")'), "output_rejected")


def test_sparse_one_tebibyte_file(stack):
    failed_as(
        writes(
            stack,
            """
import os, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
fd = os.open("/output/result.json", os.O_WRONLY | os.O_CREAT)
try:
    os.ftruncate(fd, 1 << 40)
except OSError:
    os.ftruncate(fd, (64 << 20) - 1)  # the fsize limit stops 1 TiB; the biggest sparse file allowed then
os.pwrite(fd, b'{"score": 1}', 0)
""",
        ),
        "output_rejected",
    )


def test_hundred_megabyte_json(stack):
    failed_as(
        writes(
            stack,
            """
import os
fd = os.open("/output/result.json", os.O_WRONLY | os.O_CREAT)
os.write(fd, b'{"score": 1, "pad": "')
try:
    for _ in range(100):
        os.write(fd, b"x" * (1 << 20))
except OSError:
    pass  # the output volume is full at 1 MiB: what is there is an unterminated JSON string
""",
        ),
        "output_rejected",
    )


@pytest.mark.parametrize(
    "payload",
    [
        "[" * 100_000 + "]" * 100_000,  # deeply nested
        '{"score": NaN}',
        '{"score": Infinity}',
        '{"score": -Infinity}',
        '{"score": 1, "score": 2}',  # duplicate keys
        '{"score": 1, "weights_0": 0.25}',  # undeclared metric
        '{"score": "1"}',
        '{"score": {"nested": 1}}',
    ],
)
def test_malformed_json(stack, payload):
    failed_as(writes(stack, f'open("/output/result.json", "w").write({payload!r})'), "output_rejected")


def test_non_utf8(stack):
    failed_as(
        writes(stack, 'open("/output/result.json", "wb").write(b\'{"score": 1, "x\\xff": 2}\')'), "output_rejected"
    )


def test_well_formed_result_still_passes(stack):
    assert released(writes(stack, 'open("/output/result.json", "w").write(\'{"score": 0.123456789}\')')) == {
        "score": 0.1235
    }
