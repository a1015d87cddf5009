"""keep_freed_memory: large freed blocks stay in the heap instead of going back to the system;
bound_kernel_caches: oneDNN's kernel caches capped unless the user set them."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import pytest
import torch

from nmt.allocator import KERNEL_CACHE_CAPACITY, bound_kernel_caches, keep_freed_memory


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


def _libc_mallinfo2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c")).mallinfo2
    except (OSError, AttributeError, TypeError):
        return None
    function.restype = MallInfo2
    return function


mallinfo2 = _libc_mallinfo2()


@pytest.mark.skipif(mallinfo2 is None, reason="needs glibc 2.33+ (mallinfo2) on Linux")
def test_a_large_tensor_comes_from_the_heap_not_from_mmap() -> None:
    assert keep_freed_memory()
    before = mallinfo2().hblkhd  # bytes in blocks served by mmap
    block = torch.empty(16 << 20)  # 64 MiB, far above glibc's default mmap threshold (128 KiB to 32 MiB)
    assert mallinfo2().hblkhd - before < block.numel() * block.element_size()
    del block


def test_kernel_caches_are_bounded_unless_the_user_set_them(monkeypatch) -> None:
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "7")
    bound_kernel_caches()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(KERNEL_CACHE_CAPACITY)
    assert os.environ["LRU_CACHE_CAPACITY"] == "7"
