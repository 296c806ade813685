"""glibc's malloc tuned so that large freed blocks are reused, not mapped afresh (and
zero-filled by the kernel) for every batch; left alone where the user says so."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

import headstart.cli.main as cli

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# Allocates and frees a 64 MB block ten times, touching every page, as a network's batches
# do with their activations; prints whether the allocator was tuned and the page faults.
_BATCHES = """
import ctypes, resource, sys
from headstart.allocator import tune_allocator
tuned = tune_allocator() if sys.argv[1] == "tune" else False
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    block = libc.malloc(64 << 20)
    ctypes.memset(block, 1, 64 << 20)
    libc.free(block)
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _batches(tune: bool, **env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "HEADSTART_M"))}
    out = subprocess.run(
        [sys.executable, "-c", _BATCHES, "tune" if tune else "leave"],
        env=clean | env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return out[0] == "True", int(out[1])


@glibc
def test_tuned_malloc_reuses_large_blocks_instead_of_faulting_them_in_again() -> None:
    tuned, tuned_faults = _batches(True)
    untouched, faults = _batches(False)
    assert tuned and not untouched
    # 16,384 pages a 64 MB block: faulted in ten times as glibc leaves it, about once tuned
    assert faults > 100_000 and tuned_faults < faults / 4


@glibc
@pytest.mark.parametrize(
    "env", [{"HEADSTART_MALLOC": "system"}, {"MALLOC_MMAP_THRESHOLD_": "65536"}]
)
def test_the_users_own_allocator_settings_are_left_alone(env: dict[str, str]) -> None:
    tuned, faults = _batches(True, **env)
    assert not tuned and faults > 100_000  # every block mapped and faulted in afresh


def test_every_command_runs_with_the_allocator_tuned(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(cli, "tune_allocator", lambda: calls.append(True) or True)
    assert cli.main(["backbones"]) == 0
    assert calls == [True] and "tf_efficientnet_lite0" in capsys.readouterr().out
