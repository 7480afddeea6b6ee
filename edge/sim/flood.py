"""A slow-loris client for tests: connections whose request head never ends, each reopened when the agent drops it.

Run it as its own process (``python -m edge.sim.flood --port P``) so the client under test does not share an event
loop with 1,000 attacker connections: the attack is on the agent, not on its honest client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

HEAD = b"POST /api/v1/orders HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"


async def slow_loris(port: int, stop: asyncio.Event, opened: list[int]) -> None:
    """One attacker slot: a request head that never ends, one more header line a second, reconnect when dropped."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        opened[0] += 1
        try:
            writer.write(HEAD)
            while not stop.is_set() and not reader.at_eof():
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(1024), timeout=1.0)
                writer.write(b"X-Slow: 1\r\n")
        except OSError:
            pass
        finally:
            writer.close()


async def flood(port: int, connections: int, seconds: float) -> int:
    """Keeps ``connections`` slow-loris slots busy for ``seconds``; returns how many connections were opened."""
    stop, opened = asyncio.Event(), [0]
    tasks = [asyncio.create_task(slow_loris(port, stop, opened)) for _ in range(connections)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return opened[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    print(asyncio.run(flood(args.port, args.connections, args.seconds)), flush=True)  # connections opened
    return 0


if __name__ == "__main__":
    sys.exit(main())
