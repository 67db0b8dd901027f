"""Read the logged history of an offline wandb run (wandb 0.31 ships no reader for it).

A `run-<id>.wandb` file is a LevelDB-style log: a 7-byte header (b":W&B", 2 magic bytes,
1 version byte), then 32 KiB blocks of chunks, each with a 7-byte header (crc32 uint32,
length uint16, type uint8: 1 full, 2 first, 3 middle, 4 last). The reassembled records
are protobuf `Record` messages; `history` records hold the values given to `wandb.log`.
"""

import glob
import json
import os
import struct

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7


def read_records(path: str) -> list:
    """All protobuf records in one .wandb file."""
    data = open(path, "rb").read()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a wandb log (no :W&B header)")
    records, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        block_left = BLOCK - pos % BLOCK
        if block_left < HEADER:  # a block's tail too short for a header is padding
            pos += block_left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        payload = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            continue
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def history(path: str) -> list[dict]:
    """The rows logged with wandb.log, as dicts of key -> decoded JSON value."""
    rows = []
    for record in read_records(path):
        if record.WhichOneof("record_type") == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows


def offline_runs(root: str) -> list[str]:
    """Every offline run's .wandb file below `root`."""
    return sorted(glob.glob(os.path.join(root, "**", "offline-run-*", "run-*.wandb"), recursive=True))
