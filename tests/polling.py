"""Waiting for the agent from outside: poll one of its JSON routes until the answer says so."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp


async def until(api: aiohttp.ClientSession, url: str, done: Callable[[Any], bool], what: str) -> None:
    """Polls ``url`` until ``done(body)``; fails naming ``what`` after 10 s."""
    for _ in range(200):
        async with api.get(url) as response:
            if done(await response.json()):
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not {what} after 10 s: {url}")
