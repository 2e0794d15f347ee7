#!/usr/bin/env python3
"""Reads Eddy's flushed block objects back with an independent S3 client (boto3) and checks them.

For each segment folder under PREFIX/SCOPE/STREAM/ it lists the block objects in key order, decodes each
(the 44-byte header of docs/protocol.md, zstd or plain), checks that they tile the segment from the manifest's
`first` offset without a gap or overlap up to its `flushed` watermark, and, when --expected DIR is given, that
the bytes equal DIR/<segment:08>.bin (the segment's bytes from offset 0, as the store holds them).

Usage:
  AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... scripts/verify-objects.py \
      --endpoint http://127.0.0.1:8333 --bucket B --prefix eddy --stream demo/events [--expected DIR]

Prints one line per segment and `OK` at the end; exits 1 on the first problem, naming it.
"""
import argparse
import json
import os
import struct
import sys

import boto3
import zstandard

HEADER = struct.Struct(">8sHBBIQQIII")  # magic, version, codec, flags, segment, start, end, stored, crc, header crc


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def decode(key, body):
    if len(body) < HEADER.size:
        fail(f"{key}: {len(body)} bytes, shorter than the header")
    magic, version, codec, _flags, segment, start, end, stored, _crc, _hcrc = HEADER.unpack(body[: HEADER.size])
    if magic != b"EDDYBLK1" or version != 1:
        fail(f"{key}: not a version-1 block object")
    payload = body[HEADER.size :]
    if len(payload) != stored:
        fail(f"{key}: {len(payload)} payload bytes, header says {stored}")
    if codec == 1:
        data = zstandard.ZstdDecompressor().decompress(payload, max_output_size=end - start)
    elif codec == 0:
        data = payload
    else:
        fail(f"{key}: unknown codec {codec}")
    if len(data) != end - start:
        fail(f"{key}: {len(data)} bytes, header says {start}..{end}")
    return segment, start, end, data


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--stream", required=True, help="SCOPE/STREAM")
    parser.add_argument("--expected", help="folder of <segment:08>.bin files with each segment's bytes")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    args = parser.parse_args()

    s3 = boto3.client("s3", endpoint_url=args.endpoint, region_name=args.region)
    base = (args.prefix.rstrip("/") + "/" if args.prefix else "") + args.stream + "/"
    manifests = {}
    blocks = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args.bucket, Prefix=base):
        for entry in page.get("Contents", []):
            rest = entry["Key"][len(base) :]
            if rest.endswith(".manifest"):
                manifests[rest[: -len(".manifest")]] = entry["Key"]
            elif rest.endswith(".blk"):
                folder, name = rest.split("/")
                blocks.setdefault(folder, []).append(entry["Key"])
    if not manifests:
        fail(f"no manifest under s3://{args.bucket}/{base}")
    for segment in sorted(manifests):
        manifest = json.loads(s3.get_object(Bucket=args.bucket, Key=manifests[segment])["Body"].read())
        keys = sorted(blocks.get(segment, []))
        at = manifest["first"]
        joined = bytearray()
        for key in keys:
            body = s3.get_object(Bucket=args.bucket, Key=key)["Body"].read()
            number, start, end, data = decode(key, body)
            if number != int(segment):
                fail(f"{key}: header says segment {number}")
            if key.split("/")[-1] != f"{start:020d}.blk":
                fail(f"{key}: header says it starts at {start}")
            if start != at:
                fail(f"{key}: starts at {start}, the objects before end at {at}")
            joined += data
            at = end
        if at < manifest["flushed"]:
            fail(f"segment {segment}: objects end at {at}, the manifest says {manifest['flushed']} is flushed")
        if args.expected:
            with open(os.path.join(args.expected, segment + ".bin"), "rb") as f:
                expected = f.read()[manifest["first"] : at]
            if bytes(joined) != expected:
                fail(f"segment {segment}: objects differ from the store's bytes ({len(joined)} vs {len(expected)})")
        print(f"segment {segment}: {len(keys)} objects, {manifest['first']}..{at}, manifest flushed {manifest['flushed']}")
    print("OK")


if __name__ == "__main__":
    main()
