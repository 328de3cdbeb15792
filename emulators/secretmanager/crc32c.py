"""CRC32C (Castagnoli), the checksum Secret Manager uses for payloads.

Pure Python because ``google-crc32c`` is not a dependency; payloads are at
most 64 KiB, so a table-driven loop is fast enough for an emulator.
"""

from __future__ import annotations

_POLY = 0x82F63B78  # reversed Castagnoli polynomial


def _make_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
