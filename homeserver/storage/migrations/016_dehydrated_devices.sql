-- Dehydrated devices (MSC3814): one per user, a device whose keys live encrypted in
-- device_data (which only the user can decrypt), so that it receives room keys while all
-- of the user's devices are offline.
CREATE TABLE dehydrated_devices (
    user_id TEXT NOT NULL PRIMARY KEY,
    device_id TEXT NOT NULL,
    device_data TEXT NOT NULL
);
