"""Sync with the central API: client, connectivity monitor, recovery phases, status outbox."""

from edge.sync.client import CentralClient, CentralUnreachableError, RateLimiter
from edge.sync.recovery import Recovery
from edge.sync.service import SyncService

__all__ = ["CentralClient", "CentralUnreachableError", "RateLimiter", "Recovery", "SyncService"]
