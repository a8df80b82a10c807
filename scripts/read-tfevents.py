#!/usr/bin/env python3
"""Read the TensorBoard event files in a folder and print their scalars as JSON.

Usage: python3 scripts/read-tfevents.py DIR

Written from the format's description alone (Python standard library only, sharing no code
with the runner's writer), so that it checks the writer rather than mirroring it:

- a file is a sequence of TFRecords: u64 length (little-endian), u32 masked CRC32C of those
  8 bytes, the data, u32 masked CRC32C of the data; masked(c) = ((c >> 15) | (c << 17)) +
  0xa282ead8 (mod 2**32), CRC32C being the Castagnoli CRC (reflected polynomial 0x82F63B78);
- each record's data is an Event proto: 1 wall_time (double), 2 step (int64), 3 file_version
  (string), 5 summary (Summary: repeated 1 value = Value {1 tag (string), 2 simple_value
  (float)}); other fields (such as 7, session_log) are skipped.

Every file in DIR whose name contains "tfevents" is read (not recursively). Any record that
is truncated or fails a CRC is an error (exit status 1). Output:

  {"file_count": N,
   "files": [{"name": ..., "records": ..., "file_version": ...}, ...],
   "scalars": [{"step": ..., "wall_time": ..., "tag": ..., "value": ...}, ...]}

with the scalars sorted by (step, tag).
"""

import json
import os
import struct
import sys


class FormatError(Exception):
    pass


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def records(name, data):
    """Yield the data of each TFRecord in `data`, checking both CRCs."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < 12:
            raise FormatError(f"{name}: truncated record header at byte {pos}")
        length_bytes = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        (length_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        if length_crc != masked_crc32c(length_bytes):
            raise FormatError(f"{name}: bad length CRC at byte {pos}")
        start, end = pos + 12, pos + 12 + length
        if end + 4 > len(data):
            raise FormatError(f"{name}: record at byte {pos} truncated")
        payload = data[start:end]
        (data_crc,) = struct.unpack("<I", data[end : end + 4])
        if data_crc != masked_crc32c(payload):
            raise FormatError(f"{name}: bad data CRC in the record at byte {pos}")
        yield payload
        pos = end + 4


def read_varint(buf, pos):
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise FormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise FormatError("varint too long")


def fields(buf):
    """Yield (field number, wire type, value) for each field of a protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise FormatError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise FormatError("truncated field")
        yield number, wire, value


def parse_event(buf):
    event = {"wall_time": 0.0, "step": 0, "file_version": None, "values": []}
    for number, wire, value in fields(buf):
        if number == 1 and wire == 1:
            (event["wall_time"],) = struct.unpack("<d", value)
        elif number == 2 and wire == 0:
            event["step"] = value - (1 << 64) if value >= (1 << 63) else value
        elif number == 3 and wire == 2:
            event["file_version"] = value.decode("utf-8")
        elif number == 5 and wire == 2:
            for vnumber, vwire, entry in fields(value):
                if vnumber != 1 or vwire != 2:
                    continue
                tag, simple_value = None, None
                for enumber, ewire, evalue in fields(entry):
                    if enumber == 1 and ewire == 2:
                        tag = evalue.decode("utf-8")
                    elif enumber == 2 and ewire == 5:
                        (simple_value,) = struct.unpack("<f", evalue)
                if simple_value is not None:
                    event["values"].append((tag, simple_value))
    return event


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    if crc32c(b"123456789") != 0xE3069283:
        raise AssertionError("CRC32C self-check failed")
    folder = argv[1]
    files, scalars = [], []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if "tfevents" not in name or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        count, file_version = 0, None
        for payload in records(name, data):
            event = parse_event(payload)
            if count == 0:
                file_version = event["file_version"]
            count += 1
            for tag, value in event["values"]:
                scalars.append(
                    {"step": event["step"], "wall_time": event["wall_time"], "tag": tag, "value": value}
                )
        files.append({"name": name, "records": count, "file_version": file_version})
    scalars.sort(key=lambda s: (s["step"], s["tag"]))
    print(json.dumps({"file_count": len(files), "files": files, "scalars": scalars}, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except FormatError as e:
        print(f"read-tfevents: {e}", file=sys.stderr)
        sys.exit(1)
