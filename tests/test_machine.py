import os
import platform
import subprocess
import sys

import pytest

from gnnprune.machine import OPT_OUT_VARIABLE, load_note


def _retain_in_subprocess(env_extra: dict[str, str]) -> str:
    # Process-wide allocator settings: keep them out of the test process.
    code = "from gnnprune.machine import retain_freed_memory; print(retain_freed_memory())"
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True).stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_retain_freed_memory_takes_effect_on_glibc():
    assert _retain_in_subprocess({OPT_OUT_VARIABLE: "0"}) == "glibc malloc: freed memory retained (mmap and trimming off)"


def test_retain_freed_memory_can_be_refused():
    assert _retain_in_subprocess({OPT_OUT_VARIABLE: "1"}) == f"system default malloc (${OPT_OUT_VARIABLE}=1)"


def test_load_note_names_the_load_and_cores_or_nothing():
    assert load_note(1.234).startswith("1-minute load average 1.23 at start on ")
    assert load_note(float("nan")) == "" and load_note(None) == ""
