"""Tiny foreign-architecture programs, written byte by byte, for the emulation tests."""

from __future__ import annotations

import struct


def arm64_program_exiting_42_bytes() -> bytes:
    """A static aarch64 ELF: `mov x0, #42; mov x8, #93 (exit); svc #0`."""
    code = struct.pack("<3I", 0xD2800540, 0xD2800BA8, 0xD4000001)
    base, header_size, program_header_size = 0x400000, 64, 56
    size = header_size + program_header_size + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, ELF v1
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,  # executable
        183,  # EM_AARCH64
        1,
        base + header_size + program_header_size,  # entry: the code right after the headers
        header_size,
        0,
        0,
        header_size,
        program_header_size,
        1,
        0,
        0,
        0,
    )
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)  # PT_LOAD, r-x
    return header + load + code
