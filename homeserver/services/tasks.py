"""Long admin jobs run in the background: persisted before they start, their progress and
result saved as they go, and resumed when the server starts again after a stop."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from crypto.tokens import mint_opaque_id
from homeserver.errors import MatrixError, not_found

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
Handler = Callable[[JsonDict], Awaitable[JsonDict]]


class TaskScheduler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.admin.store
        self._handlers: dict[str, Handler] = {}

    def register(self, action: str, handler: Handler) -> None:
        self._handlers[action] = handler

    async def schedule(self, action: str, resource_id: str | None, params: JsonDict) -> str:
        now = self.hs.clock.time_msec()
        task = {"id": mint_opaque_id(), "action": action, "resource_id": resource_id,
                "params": params, "status": "scheduled", "created_ts": now,
                "updated_ts": now}  # fmt: skip
        await self.store.save_task(task)
        defer.ensureDeferred(self._run(task))
        return str(task["id"])

    async def resume(self) -> None:
        """Start again what a stop interrupted (each job is written to be safe to redo)."""
        for task in await self.store.tasks(statuses=("scheduled", "active")):
            logger.info("Resuming %s task %s", task["action"], task["id"])
            defer.ensureDeferred(self._run(task))

    async def _run(self, task: JsonDict) -> None:
        handler = self._handlers.get(str(task["action"]))
        if handler is None:
            return
        task["status"] = "active"
        await self._save(task)
        try:
            task["result"] = await handler(task)
            task["status"] = "complete"
        except Exception as e:
            logger.exception("Task %s failed", task["id"])
            task["status"] = "failed"
            task["error"] = e.msg if isinstance(e, MatrixError) else str(e)
        await self._save(task)

    async def progress(self, task: JsonDict, result: JsonDict) -> None:
        task["result"] = result
        await self._save(task)

    async def _save(self, task: JsonDict) -> None:
        task["updated_ts"] = self.hs.clock.time_msec()
        await self.store.save_task(task)

    async def get(self, task_id: str, action: str) -> JsonDict:
        """The task of that kind (a purge ID is no redaction ID); 404 otherwise."""
        found = await self.store.tasks(task_id=task_id)
        if not found or found[0]["action"] != action:
            raise not_found("No such task")
        return found[0]

    async def for_resource(self, resource_id: str, action: str) -> list[JsonDict]:
        return [t for t in await self.store.tasks(resource_id=resource_id) if t["action"] == action]
