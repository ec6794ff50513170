#!/usr/bin/env python3
"""Prints the program interpreter and the DT_NEEDED libraries of 64-bit little-endian ELF files,
one name per line: what the initramfs of cross/emulated-board.sh must carry for them to run.
Standard library only, so it needs no cross binutils.

  elf_needed.py FILE...
"""

import struct
import sys

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB = 0, 1, 5


def needed(path):
    data = open(path, "rb").read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        sys.exit(f"{path}: not a 64-bit little-endian ELF file")
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dynamic, names = [], None, []
    for i in range(phnum):
        kind, _, offset, vaddr, _, filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
        if kind == PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif kind == PT_DYNAMIC:
            dynamic = (offset, filesz)
        elif kind == PT_INTERP:
            names.append(data[offset : offset + filesz].rstrip(b"\0").decode().rsplit("/", 1)[-1])
    if dynamic is None:
        return names  # static

    def file_offset(addr):
        for vaddr, offset, filesz in loads:
            if vaddr <= addr < vaddr + filesz:
                return addr - vaddr + offset
        sys.exit(f"{path}: address {addr:#x} is in no loaded segment")

    entries = [struct.unpack_from("<qQ", data, dynamic[0] + 16 * i) for i in range(dynamic[1] // 16)]
    strtab = file_offset(next(v for t, v in entries if t == DT_STRTAB))
    for tag, value in entries:
        if tag == DT_NULL:
            break
        if tag == DT_NEEDED:
            end = data.index(b"\0", strtab + value)
            names.append(data[strtab + value : end].decode())
    return names


for arg in sys.argv[1:]:
    for name in needed(arg):
        print(name)
