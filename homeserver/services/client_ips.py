"""Recording where each session is used from, and forgetting it after the retention period.

Requests only touch an in-memory buffer; a timer writes the buffer in one
transaction, so recording an address never delays a response.
"""

from __future__ import annotations

import logging

from config.schema import PrivacyConfig
from homeserver import metrics
from homeserver.clock import Clock
from homeserver.storage.devices import DeviceStore

logger = logging.getLogger(__name__)


class ClientIpService:
    def __init__(self, clock: Clock, store: DeviceStore, config: PrivacyConfig) -> None:
        self.clock = clock
        self.store = store
        self.config = config
        self._pending: dict[tuple[str, str, str, str], int] = {}
        # The batch being written: still shown until it is in the database.
        self._writing: dict[tuple[str, str, str, str], int] = {}

    def start(self) -> None:
        self.clock.looping_call(self.flush, self.config.flush_interval_ms)
        self.clock.looping_call(self.purge_expired, self.config.purge_interval_ms)

    def record(self, user_id: str, device_id: str, ip: str, user_agent: str) -> None:
        self._pending[(user_id, device_id, ip, user_agent[:512])] = self.clock.time_msec()
        metrics.CLIENT_IP_BUFFERED.set(len(self._pending))

    def pending_for_user(self, user_id: str) -> dict[str, tuple[str, str, int]]:
        """The newest buffered (ip, user agent, time) per device, not yet written."""
        latest: dict[str, tuple[str, str, int]] = {}
        for (owner, device_id, ip, user_agent), ts in [
            *self._writing.items(),
            *self._pending.items(),
        ]:
            if owner == user_id and (device_id not in latest or latest[device_id][2] < ts):
                latest[device_id] = (ip, user_agent, ts)
        return latest

    def forget_device(self, user_id: str, device_id: str) -> None:
        """Drop buffered sightings of a deleted device so that none is written after it."""
        for buffer in (self._pending, self._writing):
            for key in [k for k in buffer if k[0] == user_id and k[1] == device_id]:
                del buffer[key]

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        self._writing = batch
        metrics.CLIENT_IP_BUFFERED.set(0)
        try:
            await self.store.upsert_client_ips([(*key, ts) for key, ts in batch.items()])
        except Exception:
            logger.exception("Failed to write %d client IP records", len(batch))
        finally:
            self._writing = {}

    async def purge_expired(self) -> int:
        cutoff = self.clock.time_msec() - self.config.retention_ms
        try:
            purged = await self.store.purge_client_ips_before(cutoff)
        except Exception:
            logger.exception("Failed to purge expired client IP records")
            return 0
        if purged:
            logger.info("Deleted %d client IP records older than the retention period", purged)
            metrics.CLIENT_IPS_PURGED.inc(purged)
        return purged
