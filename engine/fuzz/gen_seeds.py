#!/usr/bin/env python3
"""Writes a small seed corpus for the fuzz targets into corpus/<target>/ (not committed)."""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
MAGIC, VERSION = 0x4E41, 1
END, REPAIR = 0x02, 0x01
SAMPLE_BYTES = {1: 2, 2: 3, 3: 4}  # S16_LE, S24_3LE, S32_LE


def header(flags=0, stream_id=1, seq=0, first=0, rate=48_000, ch=2, fmt=1, frames=64,
           ext=0, tag=0):
    return struct.pack(">HBBIIQIBBHHBB", MAGIC, VERSION, flags, stream_id, seq, first, rate,
                       ch, fmt, frames, ext, tag, 0)


def packet(**kw):
    h = header(**kw)
    body = kw.get("ext", 0) + kw.get("frames", 64) * kw.get("ch", 2) * SAMPLE_BYTES[
        kw.get("fmt", 1)] + kw.get("tag", 0)
    return h + bytes((i * 37 + 11) & 0xFF for i in range(body))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    seeds = {
        "s16_stereo": packet(),
        "s24_mono_ext_tag": packet(ch=1, fmt=2, frames=100, ext=8, tag=16),
        "s32_8ch_end": packet(flags=END, ch=8, fmt=3, frames=40, seq=0xFFFFFFFF),
        "repair": packet(flags=REPAIR, frames=16),
        "huge_first_frame": packet(first=(1 << 63) - 1, frames=1),
        "header_only": header(),
    }
    for name, data in seeds.items():
        write("parse_packet", name, data)

    # Receiver op streams: mode byte, then ops (see fuzz_targets/receiver.rs).
    def raw(d):
        return bytes([0]) + struct.pack("<H", len(d)) + d

    def render_period(dt_us=1333):
        return bytes([2, 0x80]) + struct.pack("<H", dt_us)

    def in_step(count, fill=0x11):
        return bytes([3, count - 1, fill])

    for mode in range(3):
        write("receiver", f"steady_{mode}", bytes([mode]) + in_step(16) * 8)
        write("receiver", f"raw_{mode}",
              bytes([mode]) + b"".join(raw(packet(first=64 * k, seq=k)) + render_period()
                                       for k in range(12)))
        # A restart: stream 0 in step, then stream 1 taking over.
        other = b"".join(bytes([1, 1, 0, 0]) + struct.pack("<h", 0) + struct.pack("<H", 63)
                         + bytes([k, 67]) + render_period(0) for k in range(8))
        write("receiver", f"restart_{mode}", bytes([mode]) + in_step(16) + other + in_step(16))
        if mode != 1:  # Full scale through a slip window is a known crash.
            write("receiver", f"loud_{mode}", bytes([mode]) + in_step(16, 0x91) * 4)


if __name__ == "__main__":
    main()
