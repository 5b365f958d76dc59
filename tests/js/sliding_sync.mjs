// Simplified sliding sync (MSC4186) driven by matrix-js-sdk's own SlidingSync + SlidingSyncSdk,
// wired the way Element Web does it: MatrixClient.startClient({ slidingSync }) with Rust crypto
// (so the sdk registers every extension it has: to_device, e2ee, account_data, typing,
// receipts, sticky events). Run by tests/test_sliding_sync_js.py.
//
// Input: env SLIDING_SYNC_TEST, JSON {base_url, user_id, device_id, access_token,
//   expected_rooms: [room ids], subscribe_room, live: [{room, body}], timeout_ms?}
// Steps: "list"  - wait for the list to hold expected_rooms (timeline_limit 1);
//        "subscription" - subscribe to subscribe_room with timeline_limit 10;
//        "live"  - print READY_FOR_LIVE on stderr once the next long-poll is in flight, then wait
//                  for every live[].body to arrive through RoomData.
// Prints exactly one JSON line on stdout; exits 0 if every step completed, else 1.
// Everything else (sdk logs when SDK_LOG_LEVEL=debug, progress) goes to stderr.

// Node 20 shim: matrix-js-sdk >= 37 uses Promise.withResolvers (Node 22).
if (typeof Promise.withResolvers !== "function") {
    Promise.withResolvers = function withResolvers() {
        let resolve, reject;
        const promise = new this((res, rej) => ((resolve = res), (reject = rej)));
        return { promise, resolve, reject };
    };
}
const writeStdout = process.stdout.write.bind(process.stdout);
const verbose = /^(debug|trace|info)$/i.test(process.env.SDK_LOG_LEVEL || "");
for (const m of ["log", "info", "debug", "trace"]) console[m] = verbose ? (...a) => console.error(...a) : () => {};
console.warn = (...a) => console.error(...a);
const progress = (...a) => console.error("[sliding_sync.mjs]", ...a);

const cfg = JSON.parse(process.env.SLIDING_SYNC_TEST || "{}");
const baseUrl = String(cfg.base_url || "").replace(/\/+$/, "");
const TIMEOUT_MS = Number(cfg.timeout_ms || 20000);
const SS_PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
const result = { sdk_version: null, steps: {}, http_errors: [], sync_requests: [], errors: [] };
const bodies = (events) => (events || []).filter((e) => e.type === "m.room.message").map((e) => e.content?.body);

// Every HTTP answer >= 400 and a summary of every sliding sync request/response.
const inFlight = new Map(); // seq -> pos
let seq = 0;
async function tracingFetch(input, init = {}) {
    const url = new URL(typeof input === "string" || input instanceof URL ? String(input) : input.url);
    const isSS = url.pathname === SS_PATH;
    const n = ++seq;
    const entry = isSS ? { seq: n, pos: url.searchParams.get("pos"), timeout: url.searchParams.get("timeout") } : null;
    if (isSS) {
        const req = JSON.parse(init.body || "{}");
        entry.subscribe = Object.keys(req.room_subscriptions || {});
        entry.extensions = Object.keys(req.extensions || {});
        inFlight.set(n, entry.pos);
    }
    const t0 = Date.now();
    let resp;
    try {
        resp = await globalThis.fetch(input, init);
    } catch (e) {
        if (isSS) Object.assign(entry, { error: e.name, ms: Date.now() - t0 });
        throw e;
    } finally {
        if (isSS) inFlight.delete(n), result.sync_requests.push(entry);
    }
    if (isSS) {
        Object.assign(entry, { status: resp.status, ms: Date.now() - t0 });
        if (resp.ok) {
            const body = await resp.clone().json();
            entry.next_pos = body.pos;
            entry.rooms = Object.keys(body.rooms || {});
        }
    }
    if (resp.status >= 400) {
        const text = await resp.clone().text();
        const req = typeof init.body === "string" ? init.body.slice(0, 600) : undefined;
        result.http_errors.push({ method: init.method || "GET", path: url.pathname + url.search.replace(/access_token=[^&]*/, ""), status: resp.status, response: text.slice(0, 600), request: req });
    }
    return resp;
}

const deadline = (ms, what) => new Promise((_, rej) => setTimeout(() => rej(new Error(`timeout after ${ms} ms: ${what}`)), ms).unref());
const until = (pred, ms, what) => Promise.race([
    (async () => { while (!pred()) await new Promise((r) => setTimeout(r, 50)); })(),
    deadline(ms, what),
]);
function finish(code) {
    writeStdout(JSON.stringify(result) + "\n");
    process.exit(code);
}

let client, ss;
try {
    const { createRequire } = await import("node:module");
    result.sdk_version = createRequire(import.meta.url)("matrix-js-sdk/package.json").version;
    const sdk = await import("matrix-js-sdk");
    const { SlidingSync, SlidingSyncEvent, SlidingSyncState } = await import("matrix-js-sdk/lib/sliding-sync.js");
    const requiredState = [["m.room.name", ""], ["m.room.create", ""]];

    client = sdk.createClient({ baseUrl, userId: cfg.user_id, deviceId: cfg.device_id, accessToken: cfg.access_token, fetchFn: tracingFetch });
    await client.initRustCrypto({ useIndexedDB: false });
    const lists = new Map([["all", { ranges: [[0, 19]], timeline_limit: 1, required_state: requiredState }]]);
    ss = new SlidingSync(baseUrl, lists, { timeline_limit: 10, required_state: requiredState }, client, TIMEOUT_MS);

    const roomData = []; // every RoomData event, in order
    let lastResp = null;
    ss.on(SlidingSyncEvent.RoomData, (roomId, d) => {
        roomData.push({ room: roomId, initial: !!d.initial, limited: !!d.limited, num_live: d.num_live, bump_stamp: d.bump_stamp, bodies: bodies(d.timeline), at: Date.now() });
    });
    ss.on(SlidingSyncEvent.Lifecycle, (state, resp, err) => {
        if (err) result.errors.push(`lifecycle ${state}: ${err.message || err}`);
        if (state === SlidingSyncState.Complete) lastResp = resp;
    });
    const byBump = () => client.getRooms().sort((a, b) => (b.getBumpStamp() ?? 0) - (a.getBumpStamp() ?? 0)).map((r) => r.roomId);
    const sdkBodies = (roomId) => bodies(client.getRoom(roomId)?.getLiveTimeline().getEvents().map((e) => e.event));

    await client.startClient({ slidingSync: ss });

    // Step 1: the room list.
    await until(() => cfg.expected_rooms.every((r) => client.getRoom(r)) && lastResp, TIMEOUT_MS, "list holds the expected rooms");
    result.steps.list = {
        count: ss.getListData("all")?.joinedCount,
        order_by_bump_stamp: byBump(),
        response_order: roomData.filter((d) => d.initial).map((d) => d.room),
        bump_stamps: Object.fromEntries(cfg.expected_rooms.map((r) => [r, client.getRoom(r).getBumpStamp()])),
        names: Object.fromEntries(cfg.expected_rooms.map((r) => [r, client.getRoom(r).name])),
        timelines: Object.fromEntries(roomData.map((d) => [d.room, d.bodies])),
        sync_state: client.getSyncState(),
    };
    progress("list", JSON.stringify(result.steps.list.order_by_bump_stamp));

    // Step 2: a room subscription with a longer timeline.
    const sub = cfg.subscribe_room;
    let mark = roomData.length;
    ss.modifyRoomSubscriptions(new Set([sub]));
    await until(() => roomData.slice(mark).some((d) => d.room === sub), TIMEOUT_MS, "subscription RoomData");
    const subData = roomData.slice(mark).find((d) => d.room === sub);
    result.steps.subscription = { ...subData, at: undefined, sdk_timeline: sdkBodies(sub) };
    progress("subscription", JSON.stringify(subData.bodies));

    // Step 3: live events through the long-poll.
    await until(() => [...inFlight.values()].some((p) => p === lastResp?.pos), TIMEOUT_MS, "next long-poll in flight");
    const pendingAtReady = [...inFlight.keys()];
    mark = roomData.length;
    const readyAt = Date.now();
    progress("READY_FOR_LIVE");
    console.error("READY_FOR_LIVE");
    const seen = (l) => roomData.slice(mark).some((d) => d.room === l.room && d.bodies.includes(l.body));
    await until(() => cfg.live.every(seen), TIMEOUT_MS + 15000, "live events");
    const first = roomData.slice(mark).find((d) => d.room === cfg.live[0].room && d.bodies.includes(cfg.live[0].body));
    const firstReq = result.sync_requests.find((r) => (r.rooms || []).includes(cfg.live[0].room) && r.seq >= Math.min(...pendingAtReady));
    result.steps.live = {
        room_data: roomData.slice(mark).map(({ at, ...d }) => d),
        ms_after_ready: first.at - readyAt,
        delivered_by_pending_request: !!firstReq && pendingAtReady.includes(firstReq.seq),
        delivering_request_ms: firstReq?.ms,
        order_by_bump_stamp: byBump(),
        sdk_timelines: Object.fromEntries(cfg.live.map((l) => [l.room, sdkBodies(l.room)])),
    };
    progress("live", JSON.stringify(result.steps.live.room_data));
} catch (e) {
    result.errors.push(`${e.name || "Error"}: ${e.message || e}`);
}
try {
    client?.stopClient();
} catch (e) {
    result.errors.push(`stopClient: ${e.message}`);
}
const ok = ["list", "subscription", "live"].every((s) => result.steps[s]) && !result.errors.length;
finish(ok ? 0 : 1);
