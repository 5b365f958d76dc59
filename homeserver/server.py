"""HomeServer: builds each component once and hands them to each other (no globals)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from signedjson.types import SigningKey
from twisted.internet import defer

from config.schema import HomeserverConfig
from homeserver import caches
from homeserver.clock import Clock
from homeserver.federation.acl import ServerAcl
from homeserver.federation.auth import FederationAuth
from homeserver.federation.client import FederationClient
from homeserver.federation.e2ee import FederationE2ee
from homeserver.federation.edus import FederationEdus
from homeserver.federation.fetch import FederationEvents
from homeserver.federation.keyring import Keyring
from homeserver.federation.media import FederationMedia
from homeserver.federation.membership import FederationMembership
from homeserver.federation.reads import FederationReads
from homeserver.federation.receiver import FederationReceiver
from homeserver.federation.sender import FederationSender
from homeserver.http.client_ip import ClientAddressResolver
from homeserver.http.ratelimit import Ratelimiter
from homeserver.http.server import Router
from homeserver.notifier import Notifier
from homeserver.services.account_data import AccountDataService
from homeserver.services.accounts import AccountService
from homeserver.services.admin import AdminService
from homeserver.services.auth import AuthService
from homeserver.services.client_ips import ClientIpService
from homeserver.services.consent import ConsentService
from homeserver.services.devices import DeviceService
from homeserver.services.discovery import DiscoveryService
from homeserver.services.e2ee import E2eeService
from homeserver.services.ephemeral import ReceiptService, TypingService
from homeserver.services.erasure import ErasureService
from homeserver.services.export import ExportService
from homeserver.services.media import MediaService
from homeserver.services.message_retention import MessageRetention
from homeserver.services.presence import PresenceService
from homeserver.services.profile import ProfileService
from homeserver.services.push import PushService
from homeserver.services.room_access import RelationReads, RoomAccessService, RoomReads
from homeserver.services.room_events import RoomEventService
from homeserver.services.room_retention import RoomRetention
from homeserver.services.room_shutdown import RoomShutdown
from homeserver.services.rooms import RoomService
from homeserver.services.server_notices import ServerNotices
from homeserver.services.sliding_sync import SlidingSyncService
from homeserver.services.sync import SyncService
from homeserver.services.tasks import TaskScheduler
from homeserver.services.threepids import ThreepidService
from homeserver.services.uia import InteractiveAuthService
from homeserver.services.url_preview import UrlPreviewer
from homeserver.storage.account_data import AccountDataStore
from homeserver.storage.devices import DeviceStore
from homeserver.storage.e2ee import E2eeStore
from homeserver.storage.engine import Database
from homeserver.storage.events import EventStore, StoredEvent
from homeserver.storage.federation import FederationStore
from homeserver.storage.profiles import ProfileStore
from homeserver.storage.push import PushStore
from homeserver.storage.sliding_sync import SlidingSyncStore
from homeserver.storage.sync import SyncStore
from homeserver.storage.users import UserStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stores:
    users: UserStore
    devices: DeviceStore
    profiles: ProfileStore
    account_data: AccountDataStore
    events: EventStore
    sync: SyncStore
    push: PushStore
    e2ee: E2eeStore
    federation: FederationStore
    sliding_sync: SlidingSyncStore

    @classmethod
    def build(cls, db: Database) -> Stores:
        return cls(
            UserStore(db),
            DeviceStore(db),
            ProfileStore(db),
            AccountDataStore(db),
            EventStore(db),
            SyncStore(db),
            PushStore(db),
            E2eeStore(db),
            FederationStore(db),
            SlidingSyncStore(db),
        )


class HomeServer:
    def __init__(
        self,
        config: HomeserverConfig,
        reactor: Any,
        db: Database,
        signing_key: SigningKey,
        stream_positions: dict[str, int],
        e2ee_positions: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        caches.configure(config.caches.sizes, config.caches.global_factor)
        self.config = config
        self.reactor = reactor
        self.db = db
        self.signing_key = signing_key
        self.clock = Clock(reactor)
        self.stores = Stores.build(db)
        self.ratelimiter = Ratelimiter(self.clock, config.rate_limiting)
        self.address_resolver = ClientAddressResolver(config.privacy.trusted_proxies)
        self.client_ips = ClientIpService(self.clock, self.stores.devices, config.privacy)
        self.auth = AuthService(self)
        self.accounts = AccountService(self)
        self.devices = DeviceService(self)
        self.uia = InteractiveAuthService(self)
        self.profiles = ProfileService(self)
        self.account_data = AccountDataService(self, stream_positions.get("account_data", 0))
        self.room_events = RoomEventService(
            self, stream_positions.get("events", 0), stream_positions.get("state_groups", 0)
        )
        self.room_access = RoomAccessService(self)
        self.room_reads = RoomReads(self)
        self.relation_reads = RelationReads(self)
        self.rooms = RoomService(self)
        self.notifier = Notifier(self.clock)
        self.typing = TypingService(self)
        self.presence = PresenceService(self)
        self.receipts = ReceiptService(self, stream_positions.get("receipts", 0))
        self.sync = SyncService(self)
        self.sliding_sync = SlidingSyncService(self)
        self.erasure = ErasureService(self)
        self.push = PushService(self)
        self.e2ee = E2eeService(self, e2ee_positions)
        self.media = MediaService(self)
        self.discovery = DiscoveryService(self)
        self.room_events.on_new_event.append(self._notify_new_event)
        self.federation_client = FederationClient(self)
        self.keyring = Keyring(self, self.federation_client)
        self.federation_auth = FederationAuth(self)
        self.federation_acl = ServerAcl(self)
        self.federation_sender = FederationSender(self, self.federation_client)
        self.federation_receiver = FederationReceiver(self)
        self.federation_edus = FederationEdus(self)
        self.federation_events = FederationEvents(self)
        self.federation_membership = FederationMembership(self)
        self.federation_reads = FederationReads(self)
        self.federation_e2ee = FederationE2ee(self)
        self.federation_media = FederationMedia(self)
        self.threepids = ThreepidService(self)
        self.url_previews = UrlPreviewer(self)
        self.admin = AdminService(self)
        self.tasks = TaskScheduler(self)
        self.room_shutdown = RoomShutdown(self)
        self.server_notices = ServerNotices(self)
        self.consent = ConsentService(self)
        self.exports = ExportService(self)
        self.message_retention = MessageRetention(self)
        self.room_retention = RoomRetention(self)
        self.room_events.on_new_event.append(self._queue_for_federation)
        self.notifier.watch(self.room_events.stream)
        for stream in (
            self.account_data.stream,
            self.receipts.stream,
            self.e2ee.to_device,
            self.e2ee.device_lists,
        ):
            stream.on_caught_up = self.notifier.notify_all

    @classmethod
    async def create(
        cls, config: HomeserverConfig, reactor: Any, db: Database, signing_key: SigningKey
    ) -> HomeServer:
        """Read what must be known before serving (stream positions), then build."""
        max_stream, max_group = await EventStore(db).get_max_positions()
        positions = {
            "account_data": await AccountDataStore(db).get_max_stream_id(),
            "events": max_stream,
            "state_groups": max_group,
            "receipts": await SyncStore(db).get_max_receipt_stream(),
        }
        return cls(
            config, reactor, db, signing_key, positions, await E2eeStore(db).get_max_positions()
        )

    def _notify_new_event(self, event: StoredEvent) -> None:
        """Wake the syncs of everyone in the room, and of the target of a membership change."""
        defer.ensureDeferred(self._notify_room(event))

    async def _notify_room(self, event: StoredEvent) -> None:
        users = set(await self.room_events.joined_users(event.room_id))
        if event.data.get("type") == "m.room.member":
            users.add(str(event.data.get("state_key")))
        self.notifier.notify_users(users, self.room_events.stream, event.stream_ordering)

    def _queue_for_federation(self, event: StoredEvent) -> None:
        defer.ensureDeferred(self._queue_event(event))

    async def _queue_event(self, event: StoredEvent) -> None:
        try:
            await self.federation_sender.on_new_event(event)
        except Exception:
            logger.exception("Queueing %s for federation failed", event.event_id)

    def _register_memory_tables(self) -> None:
        tables = {
            "room_locks": lambda: len(self.room_events._locks),
            "unwritten_room_events": self.room_events.unwritten_count,
            "sync_listeners": self.notifier.listener_count,
            "uia_sessions": lambda: len(self.uia._sessions),
            "ratelimit_buckets": lambda: len(self.ratelimiter._buckets),
            "typing_rooms": lambda: len(self.typing._typing),
            "client_ip_buffer": lambda: len(self.client_ips._pending),
        }
        for name, size in tables.items():
            caches.register_table(name, size)

    def start_background_tasks(self) -> None:
        self._register_memory_tables()
        self.client_ips.start()
        if self.config.federation.enabled:
            defer.ensureDeferred(self.federation_sender.start())
            self.federation_receiver.start()
        defer.ensureDeferred(self.tasks.resume())
        defer.ensureDeferred(self.admin.start())
        self.sliding_sync.start()
        self.exports.start()
        self.message_retention.start()
        self.room_retention.start()
        defer.ensureDeferred(self.consent.notify_new_version())

    def build_router(self, resources: Sequence[str]) -> Router:
        from homeserver.api import register_servlets

        router = Router()
        register_servlets(self, router, resources)
        return router
