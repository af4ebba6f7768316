"""serve/shared_memory.py: which /dev/shm files of a process group are vLLM's to remove."""

from __future__ import annotations

from pathlib import Path

from serve.shared_memory import shared_memory_in


def test_shared_memory_in_reads_the_dev_shm_lines_of_a_maps_text() -> None:
    maps = (
        "7f0000000000-7f000a000000 rw-s 00000000 00:1a 1234    /dev/shm/psm_62b86b66\n"
        "7f000a000000-7f000a001000 rw-s 00000000 00:1a 1235    /dev/shm/psm_0a (deleted)\n"
        "7f000a001000-7f000a002000 rw-s 00000000 00:1a 1236    /dev/shm/sem.mp-8379mqfx\n"
        "7f000a002000-7f000a003000 rw-s 00000000 00:1a 1237    /dev/shm/vllm_dist_09-cpushm_0\n"
        "7f000b000000-7f000b100000 r-xp 00000000 08:01 99      /usr/lib/libc.so.6\n"
        "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0       [stack]\n"
        "7ffd00021000-7ffd00022000 rw-p 00000000 00:00 0\n"
    )
    assert shared_memory_in(maps) == {  # vLLM's segments; not a semaphore
        Path("/dev/shm/psm_62b86b66"),
        Path("/dev/shm/psm_0a"),
        Path("/dev/shm/vllm_dist_09-cpushm_0"),
    }
