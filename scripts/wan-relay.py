#!/usr/bin/env python3
"""A TCP relay that makes a link look like a WAN, for tests where `tc netem` is not available (the kernel has
no sch_netem): every chunk of bytes is held DELAY ms in each direction (so a round trip takes 2 x DELAY more),
and a share LOSS of chunks is held a retransmission timeout longer (RTO ms, 200 by default), which is what a
lost TCP segment costs the stream above it. Order is kept: a held chunk holds the ones behind it. It does not
drop bytes (a relay under a TCP stream cannot): loss shows as the stalls it causes, as on a real link.

Usage:
  scripts/wan-relay.py --listen HOST:PORT --to HOST:PORT [--listen HOST:PORT --to HOST:PORT ...]
                       [--delay-ms 20] [--loss 0.01] [--rto-ms 200]

Pairs of --listen/--to are relayed independently. Prints `wan relay ready` on stdout once every listener is up;
counts go to stderr when it ends (SIGTERM or SIGINT).
"""
import argparse
import asyncio
import random
import signal
import sys
import time

COUNTS = {"connections": 0, "chunks": 0, "bytes": 0, "stalls": 0}


def address(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


async def pump(reader, writer, delay, loss, rto):
    """Copies reader to writer, each chunk released `delay` s after it arrived (plus `rto` for a lost one),
    never before the chunk ahead of it."""
    queue = asyncio.Queue()

    async def release():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.ensure_future(release())
    last_due = 0.0
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            due = time.monotonic() + delay
            if loss > 0 and random.random() < loss:
                due += rto
                COUNTS["stalls"] += 1
            last_due = max(last_due, due)
            COUNTS["chunks"] += 1
            COUNTS["bytes"] += len(data)
            await queue.put((last_due, data))
    except (ConnectionError, OSError):
        pass
    await queue.put((0, None))
    try:
        await sender
    except (ConnectionError, OSError):
        pass


def handler(target, delay, loss, rto):
    async def handle(reader, writer):
        COUNTS["connections"] += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            pump(reader, up_writer, delay, loss, rto), pump(up_reader, writer, delay, loss, rto),
            return_exceptions=True)

    return handle


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--to", action="append", required=True)
    parser.add_argument("--delay-ms", type=float, default=20)
    parser.add_argument("--loss", type=float, default=0.01)
    parser.add_argument("--rto-ms", type=float, default=200)
    args = parser.parse_args()
    if len(args.listen) != len(args.to):
        parser.error("give one --to for each --listen")
    servers = []
    for listen, to in zip(args.listen, args.to):
        host, port = address(listen)
        servers.append(await asyncio.start_server(
            handler(address(to), args.delay_ms / 1000, args.loss, args.rto_ms / 1000), host, port))
    print("wan relay ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()
    print(" ".join(f"{k}={v}" for k, v in COUNTS.items()), file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
