// End-to-end encryption scenario run by one matrix-js-sdk version (Rust crypto) against a homeserver.
//
// Setup:  cd scripts/client_matrix/js && npm ci
// Usage:  node scenario.mjs <sdkAlias> <homeserverBaseUrl>      (one version)
//         node run-all.mjs <homeserverBaseUrl> [alias ...]      (every version, one at a time)
//   sdkAlias: one of the npm aliases in package.json (sdk34, sdk37, sdk40, sdk42, sdklatest)
//
// Steps: register, cross_signing, secret_storage, key_backup, encrypted_room, send_both_ways,
// members_before_encrypting, restore_new_device (each bounded by STEP_TIMEOUT_MS). The crypto
// calls are the CryptoApi of initRustCrypto({useIndexedDB: false}), identical from 34 to 43;
// version differences are isolated in sdkPasswordLogin() and the Promise.withResolvers shim.
//
// Prints exactly one JSON line to stdout:
//   {"sdk": alias, "version": "x.y.z", "steps": {step: "ok" | "FAIL: ..." | "n/a: ..."},
//    "http_errors": [every HTTP answer >= 400, except UIA 401 challenges and the sdk's expected
//                    404 probes of account data, /room_keys/version and unstable endpoints]}
// and exits 0 if every step is "ok", else 1. Everything else (sdk logs, progress) goes to stderr.
//
// Environment: STEP_TIMEOUT_MS (default 60000); SDK_LOG_LEVEL=debug to see the sdk's own logs.

import { createRequire } from "node:module";
import { randomBytes } from "node:crypto";

const [alias, baseUrlArg] = process.argv.slice(2);
if (!alias || !baseUrlArg) {
    process.stderr.write("usage: node scenario.mjs <sdkAlias> <homeserverBaseUrl>\n");
    process.exit(2);
}
const baseUrl = baseUrlArg.replace(/\/+$/, "");
const STEP_TIMEOUT_MS = Number(process.env.STEP_TIMEOUT_MS || 60000);
const PASSWORD = "scenario-" + randomBytes(8).toString("hex");

// ---------------------------------------------------------------------------------------------
// Node 20 shim: matrix-js-sdk >= 37 declares engines.node >= 22 and uses Promise.withResolvers
// (added in Node 22). Only defined when missing.
if (typeof Promise.withResolvers !== "function") {
    Promise.withResolvers = function withResolvers() {
        let resolve, reject;
        const promise = new this((res, rej) => {
            resolve = res;
            reject = rej;
        });
        return { promise, resolve, reject };
    };
}

// ---------------------------------------------------------------------------------------------
// stdout is reserved for the single JSON result line: send every console method to stderr.
// The sdk (loglevel) and its Rust crypto (tracing) log through console.*: by default keep only
// warnings and errors; SDK_LOG_LEVEL=debug keeps everything (all on stderr).
const writeStdout = process.stdout.write.bind(process.stdout);
const verbose = /^(debug|trace|info)$/i.test(process.env.SDK_LOG_LEVEL || "");
for (const m of ["log", "info", "debug", "trace"]) {
    console[m] = verbose ? (...args) => console.error(...args) : () => {};
}
console.warn = (...args) => console.error(...args);
const progress = (...args) => console.error(`[scenario ${alias}]`, ...args);

// ---------------------------------------------------------------------------------------------
// Record every HTTP answer >= 400 (the sdk and our own requests both go through global fetch).
const httpErrors = [];
const realFetch = globalThis.fetch;
const keysQuery = { inflight: 0, last: 0 }; // the sdk's /keys/query activity, see waitKeysQueryQuiet()
const redact = (url) => String(url).replace(/access_token=[^&]*/g, "access_token=REDACTED");
// SCENARIO_TRACE_SYNC=1: log each /sync answer's since/next_batch and account data types.
const TRACE_SYNC = Boolean(process.env.SCENARIO_TRACE_SYNC);
async function traceSync(url, resp, init) {
    const who = String(init.headers?.Authorization || init.headers?.authorization || "").slice(-6);
    const since = new URL(url).searchParams.get("since");
    try {
        const body = await resp.json();
        const types = (body.account_data?.events || []).map((e) => e.type);
        progress(`sync[${who}] since=${since} -> next_batch=${body.next_batch} account_data=${JSON.stringify(types)}`);
    } catch (e) {
        progress(`sync[${who}] since=${since} -> unreadable: ${e}`);
    }
}
async function tracingFetch(input, init = {}) {
    const method = (init.method || (input && input.method) || "GET").toUpperCase();
    const url = typeof input === "string" || input instanceof URL ? String(input) : input.url;
    const isKeysQuery = /\/keys\/query/.test(url);
    if (isKeysQuery) keysQuery.inflight++;
    let resp;
    try {
        resp = await realFetch(input, init);
    } finally {
        if (isKeysQuery) {
            keysQuery.inflight--;
            keysQuery.last = Date.now();
        }
    }
    if (TRACE_SYNC && /\/sync\?/.test(url)) traceSync(url, resp.clone(), init);
    if (resp.status >= 400) {
        let text = "";
        try {
            text = await resp.clone().text();
        } catch {
            /* ignore */
        }
        let parsed = null;
        try {
            parsed = JSON.parse(text);
        } catch {
            /* not JSON */
        }
        const isUiaChallenge = resp.status === 401 && parsed && Array.isArray(parsed.flows);
        // Expected probes: "is there a backup / this account data yet?" and unstable MSC endpoints.
        const isExpectedProbe =
            resp.status === 404 &&
            method === "GET" &&
            (/\/account_data\/|\/room_keys\/version$/.test(new URL(url).pathname) || /\/unstable\//.test(url));
        if (!isUiaChallenge && !isExpectedProbe) {
            let reqBody = typeof init.body === "string" ? init.body : undefined;
            if (reqBody && /password|private|secret/i.test(reqBody)) reqBody = reqBody.slice(0, 120) + "...";
            const entry = {
                method,
                url: redact(url).replace(baseUrl, ""),
                status: resp.status,
                response: text.slice(0, 400),
            };
            if (reqBody) entry.request_body = reqBody.slice(0, 400);
            httpErrors.push(entry);
            progress("HTTP", resp.status, method, entry.url, entry.response);
        }
    }
    return resp;
}
globalThis.fetch = tracingFetch;

// ---------------------------------------------------------------------------------------------
// Load the requested sdk version (npm alias) and its crypto-api helpers.
const require = createRequire(import.meta.url);
let sdk, cryptoApi, sdkVersion;
try {
    sdkVersion = require(`${alias}/package.json`).version;
    sdk = await import(alias);
    cryptoApi = await import(`${alias}/lib/crypto-api/index.js`);
} catch (e) {
    writeStdout(
        JSON.stringify({ sdk: alias, version: sdkVersion || null, steps: { load: `FAIL: ${e.message}` } }) + "\n",
    );
    process.exit(1);
}
progress(`matrix-js-sdk ${sdkVersion} against ${baseUrl}`);

// ---------------------------------------------------------------------------------------------
// Step bookkeeping.
const STEP_NAMES = [
    "register",
    "cross_signing",
    "secret_storage",
    "key_backup",
    "encrypted_room",
    "send_both_ways",
    "members_before_encrypting",
    "restore_new_device",
];
const steps = Object.fromEntries(STEP_NAMES.map((n) => [n, "n/a: not run"]));
const failed = new Set();

class StepError extends Error {}
const check = (cond, msg) => {
    if (!cond) throw new StepError(msg);
};

function withTimeout(promise, ms, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new StepError(`timeout after ${ms} ms (${what})`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function describeError(e) {
    if (e instanceof StepError) return e.message;
    // MatrixError / HTTPError from the sdk carry the status, the URL and the server's JSON body.
    const status = e?.httpStatus ?? e?.status;
    if (status) {
        const path = e.url ? " " + redact(e.url).replace(baseUrl, "") : "";
        const body = e.data && Object.keys(e.data).length ? JSON.stringify(e.data) : e.message;
        return `HTTP ${status}${path}: ${body}`;
    }
    return `${e?.name || "Error"}: ${e?.message || e}`;
}

/** Run a step unless one of its prerequisites failed; record "ok" / "FAIL: ..." / "n/a: ...". */
async function step(name, requires, fn) {
    const missing = requires.filter((r) => failed.has(r));
    if (missing.length) {
        steps[name] = `n/a: requires ${missing.join(", ")}`;
        failed.add(name);
        return;
    }
    const t0 = Date.now();
    progress(`step ${name} ...`);
    try {
        const note = await withTimeout(Promise.resolve().then(fn), STEP_TIMEOUT_MS, name);
        steps[name] = note && note.startsWith("n/a") ? note : "ok";
        if (note && note.startsWith("n/a")) failed.add(name);
    } catch (e) {
        steps[name] = "FAIL: " + describeError(e);
        failed.add(name);
    }
    progress(`step ${name}: ${steps[name]} (${Date.now() - t0} ms)`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Poll fn() until it returns a truthy value (its value is returned); StepError on timeout. */
async function waitFor(fn, what, timeoutMs = STEP_TIMEOUT_MS, intervalMs = 250) {
    const deadline = Date.now() + timeoutMs;
    let last;
    for (;;) {
        try {
            const v = await fn();
            if (v) return v;
        } catch (e) {
            last = e;
        }
        if (Date.now() > deadline) {
            throw new StepError(`gave up waiting for ${what}${last ? `: ${describeError(last)}` : ""}`);
        }
        await sleep(intervalMs);
    }
}

/** A raw Client-Server API request (not through the sdk), for setup and explicit wire checks. */
async function api(method, path, { token, body, query } = {}) {
    const qs = query ? "?" + new URLSearchParams(query).toString() : "";
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const resp = await fetch(`${baseUrl}/_matrix/client/v3${path}${qs}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await resp.text();
    let json = null;
    try {
        json = JSON.parse(text);
    } catch {
        /* not JSON */
    }
    return { status: resp.status, json, text, request: `${method} ${path}${qs}` };
}
const describeResp = (r) => `${r.request} -> ${r.status} ${r.text.slice(0, 300)}`;
const enc = encodeURIComponent;

// ---------------------------------------------------------------------------------------------
// Version-specific branches (kept small; the CryptoApi used below is the same from 34 to 43).

/** Log in with a password through the sdk. loginRequest() exists from v37; v34 has login(type, data). */
async function sdkPasswordLogin(userId, deviceName) {
    const tmp = sdk.createClient({ baseUrl, fetchFn: tracingFetch });
    const data = {
        identifier: { type: "m.id.user", user: userId },
        password: PASSWORD,
        initial_device_display_name: deviceName,
    };
    const resp =
        typeof tmp.loginRequest === "function"
            ? await tmp.loginRequest({ type: "m.login.password", ...data }) // v37+
            : await tmp.login("m.login.password", data); // v34
    tmp.stopClient();
    return resp;
}

/**
 * Start syncing. All versions accept lazyLoadMembers (Element Web uses it), which makes the sdk call
 * GET /rooms/{id}/members?not_membership=leave&at=<sync token> before encrypting.
 */
async function startSyncing(client) {
    await client.startClient({ lazyLoadMembers: true, initialSyncLimit: 20 });
    await waitFor(() => ["PREPARED", "SYNCING"].includes(client.getSyncState()), "first sync");
}

// ---------------------------------------------------------------------------------------------
// Scenario state.
const clients = [];
const alice = { localpart: "alice_" + randomBytes(5).toString("hex") };
const bob = { localpart: "bob_" + randomBytes(5).toString("hex") };
let recoveryKey; // GeneratedSecretStorageKey from createRecoveryKeyFromPassphrase()
let backupVersion;
let roomId;
const sent = []; // {eventId, body, sender}

/**
 * Build a logged-in sdk client with Rust crypto (in-memory store, no IndexedDB needed in Node).
 * `secretStorageKey()` returns the Uint8Array secret-storage key the app "knows", or null.
 */
async function makeCryptoClient(login, secretStorageKey) {
    const cryptoCallbacks = {
        getSecretStorageKey: async ({ keys }) => {
            const key = secretStorageKey();
            const keyId = Object.keys(keys)[0];
            return key && keyId ? [keyId, key] : null;
        },
    };
    const client = sdk.createClient({
        baseUrl,
        userId: login.user_id,
        deviceId: login.device_id,
        accessToken: login.access_token,
        cryptoCallbacks,
        fetchFn: tracingFetch,
    });
    clients.push(client);
    await client.initRustCrypto({ useIndexedDB: false });
    return client;
}

async function registerUser(user) {
    const body = { username: user.localpart, password: PASSWORD, inhibit_login: true };
    const first = await api("POST", "/register", { body });
    check(first.status === 401 && first.json?.session, `register stage 1: ${describeResp(first)}`);
    const second = await api("POST", "/register", {
        body: { ...body, auth: { type: "m.login.dummy", session: first.json.session } },
    });
    check(second.status === 200 && second.json?.user_id, `register stage 2: ${describeResp(second)}`);
    user.userId = second.json.user_id;
}

/** Wait until `client` has `eventId` in the room and it decrypts to `body`. */
async function waitDecrypted(client, eventId, body, who) {
    let lastState = "event not received";
    try {
        return await waitFor(async () => {
            const ev = client.getRoom(roomId)?.findEventById(eventId);
            if (!ev) return false;
            await client.decryptEventIfNeeded(ev);
            if (ev.isBeingDecrypted?.()) await ev.getDecryptionPromise?.();
            if (!ev.isEncrypted()) throw new StepError(`${who}: event ${eventId} was not encrypted`);
            if (ev.isDecryptionFailure()) {
                lastState = `decryption failure: ${ev.getContent()?.body || ev.decryptionFailureReason}`;
                return false;
            }
            const got = ev.getClearContent()?.body;
            if (got !== body) {
                lastState = `body mismatch: ${JSON.stringify(got)}`;
                return false;
            }
            return ev;
        }, `${who} to decrypt ${eventId}`);
    } catch (e) {
        throw new StepError(`${who}: ${lastState} (${describeError(e)})`);
    }
}

// ---------------------------------------------------------------------------------------------
// The scenario.

await step("register", [], async () => {
    await registerUser(alice);
    await registerUser(bob);
    alice.login = await sdkPasswordLogin(alice.userId, "scenario alice");
    bob.login = await sdkPasswordLogin(bob.userId, "scenario bob");
    check(alice.login.access_token && alice.login.device_id, "alice login: no access_token/device_id");
    check(bob.login.access_token && bob.login.device_id, "bob login: no access_token/device_id");
    alice.client = await makeCryptoClient(alice.login, () => recoveryKey?.privateKey ?? null);
    bob.client = await makeCryptoClient(bob.login, () => null);
    // Sync from the start, as Element does. Needed, not just realistic: up to v40 the sdk's
    // secret storage waits for its own account data writes to come back down /sync.
    await startSyncing(alice.client);
    await startSyncing(bob.client);
});

await step("cross_signing", ["register"], async () => {
    const crypto = alice.client.getCrypto();
    // Password UIA (m.login.password + the server's session), used whenever the server challenges.
    let challenges = 0;
    const authUploadDeviceSigningKeys = async (makeRequest) => {
        try {
            return await makeRequest(null);
        } catch (e) {
            const session = e?.data?.session;
            if ((e?.httpStatus ?? e?.status) !== 401 || !session) throw e;
            challenges++;
            return await makeRequest({
                type: "m.login.password",
                identifier: { type: "m.id.user", user: alice.userId },
                password: PASSWORD,
                session,
            });
        }
    };
    // 1. First upload: the spec (v1.11+) lets the server skip UIA when the user has no master key.
    await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys });
    const firstChallenges = challenges;
    await waitFor(() => crypto.isCrossSigningReady(), "isCrossSigningReady() after the first upload", 20000);
    // Let the /keys/query the upload triggers (via /sync device_lists) finish first: an answer
    // still carrying the first keys, arriving after the reset has begun locally, makes the
    // sdk drop its new private keys (a client-side race, not a server fault).
    await waitFor(() => keysQuery.inflight === 0 && Date.now() - keysQuery.last > 1500, "/keys/query to settle", 20000);
    // 2. Reset: replacing existing keys MUST be protected by UIA, so the password flow is exercised.
    await crypto.bootstrapCrossSigning({ setupNewCrossSigning: true, authUploadDeviceSigningKeys });
    progress(`cross-signing: first upload ${firstChallenges} UIA challenge(s), reset ${challenges - firstChallenges}`);
    check(
        challenges - firstChallenges === 1,
        `replacing the cross-signing keys did not go through UIA (${challenges - firstChallenges} challenges)`,
    );
    const status = await crypto.getCrossSigningStatus();
    check(status.publicKeysOnDevice, `getCrossSigningStatus: ${JSON.stringify(status)}`);
    // The server must now serve the three keys, and alice's device signed by her self-signing key.
    const q = await api("POST", "/keys/query", {
        token: alice.login.access_token,
        body: { device_keys: { [alice.userId]: [] } },
    });
    check(q.status === 200, `keys/query: ${describeResp(q)}`);
    for (const field of ["master_keys", "self_signing_keys", "user_signing_keys"]) {
        check(q.json[field]?.[alice.userId], `keys/query has no ${field} for alice: ${q.text.slice(0, 300)}`);
    }
    const sskId = Object.keys(q.json.self_signing_keys[alice.userId].keys)[0];
    await waitFor(
        async () => {
            const r = await api("POST", "/keys/query", {
                token: alice.login.access_token,
                body: { device_keys: { [alice.userId]: [alice.login.device_id] } },
            });
            return r.json?.device_keys?.[alice.userId]?.[alice.login.device_id]?.signatures?.[alice.userId]?.[sskId];
        },
        "alice's device to be signed by her self-signing key in /keys/query",
        20000,
    );
    await waitFor(() => crypto.isCrossSigningReady(), "isCrossSigningReady()", 20000);
});

await step("secret_storage", ["register"], async () => {
    const crypto = alice.client.getCrypto();
    recoveryKey = await crypto.createRecoveryKeyFromPassphrase();
    check(recoveryKey?.encodedPrivateKey, "createRecoveryKeyFromPassphrase returned no encodedPrivateKey");
    await crypto.bootstrapSecretStorage({
        createSecretStorageKey: async () => recoveryKey,
        setupNewSecretStorage: true,
        setupNewKeyBackup: true,
    });
    const token = alice.login.access_token;
    const u = enc(alice.userId);
    const def = await api("GET", `/user/${u}/account_data/m.secret_storage.default_key`, { token });
    check(def.status === 200 && def.json?.key, `default key: ${describeResp(def)}`);
    const keyId = def.json.key;
    for (const type of ["m.megolm_backup.v1", "m.cross_signing.master"]) {
        const r = await api("GET", `/user/${u}/account_data/${type}`, { token });
        check(r.status === 200 && r.json?.encrypted?.[keyId], `${type} not in secret storage: ${describeResp(r)}`);
    }
    check(await crypto.isSecretStorageReady(), "isSecretStorageReady() is false");
});

await step("key_backup", ["secret_storage"], async () => {
    // Part 1 (here): a backup version exists and the sdk backs up to it. Part 2 (after messages
    // have been sent, below): the sessions reach the server.
    const v = await api("GET", "/room_keys/version", { token: alice.login.access_token });
    check(v.status === 200 && v.json?.version, `backup version: ${describeResp(v)}`);
    check(v.json.algorithm === "m.megolm_backup.v1.curve25519-aes-sha2", `algorithm: ${v.text}`);
    check(v.json.auth_data?.public_key, `backup auth_data has no public_key: ${v.text}`);
    for (const f of ["count", "etag"]) check(f in v.json, `backup version answer lacks "${f}": ${v.text}`);
    backupVersion = v.json.version;
    const crypto = alice.client.getCrypto();
    const active = await waitFor(
        async () => (await crypto.getActiveSessionBackupVersion()) || (await crypto.checkKeyBackupAndEnable(), null),
        "sdk to enable key backup",
        20000,
    );
    check(active === backupVersion, `sdk backs up to version ${active}, server has ${backupVersion}`);
    const trust = await crypto.isKeyBackupTrusted(v.json);
    check(trust.trusted && trust.matchesDecryptionKey, `isKeyBackupTrusted: ${JSON.stringify(trust)}`);
});
const keyBackupPart1Ok = !failed.has("key_backup");

await step("encrypted_room", ["register"], async () => {
    const created = await alice.client.createRoom({
        preset: "private_chat",
        name: "client matrix " + alias,
        invite: [bob.userId],
        initial_state: [
            { type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } },
        ],
    });
    roomId = created.room_id;
    check(roomId, "createRoom returned no room_id");
    await waitFor(() => bob.client.getRoom(roomId)?.getMyMembership() === "invite", "bob to see the invite");
    await bob.client.joinRoom(roomId);
    await waitFor(
        () => alice.client.getRoom(roomId)?.getMember(bob.userId)?.membership === "join",
        "alice to see bob joined",
    );
    await waitFor(() => bob.client.getRoom(roomId)?.getMyMembership() === "join", "bob's own join via sync");
    for (const [who, c] of [
        ["alice", alice.client],
        ["bob", bob.client],
    ]) {
        await waitFor(() => c.getCrypto().isEncryptionEnabledInRoom(roomId), `${who}: room encrypted`, 20000);
    }
});

/** The known server bug: GET /rooms/{id}/members?at=<sync token> answered 400. */
const isMembersAtBug = (e) =>
    (e?.httpStatus ?? e?.status) === 400 && /\/members\?/.test(e?.url || "") && /[?&]at=/.test(e?.url || "");

/**
 * Workaround, applied only after the failure above was recorded: retry the sdk's member list
 * request without ?at= so that the later steps (key backup upload, restore) still get messages.
 */
function installMembersWorkaround(client) {
    if (client.__membersWorkaround) return;
    client.__membersWorkaround = true;
    const original = client.members.bind(client);
    client.members = (rid, include, exclude, at) =>
        original(rid, include, exclude, at).catch((e) => {
            if (at && isMembersAtBug(e)) return original(rid, include, exclude, undefined);
            throw e;
        });
}

async function sendAndDecrypt(from, to, name) {
    const body = `${name} ${randomBytes(4).toString("hex")}`;
    const { event_id: eventId } = await from.client.sendMessage(roomId, { msgtype: "m.text", body });
    sent.push({ eventId, body, sender: from.userId });
    await waitDecrypted(to.client, eventId, body, name.split("->")[1]);
}

await step("send_both_ways", ["encrypted_room"], async () => {
    const problems = [];
    for (const [from, to, name] of [
        [alice, bob, "alice->bob"],
        [bob, alice, "bob->alice"],
    ]) {
        try {
            await sendAndDecrypt(from, to, name);
        } catch (e) {
            let problem = `${name}: ${describeError(e)}`;
            if (isMembersAtBug(e)) {
                installMembersWorkaround(alice.client);
                installMembersWorkaround(bob.client);
                try {
                    await sendAndDecrypt(from, to, name);
                    problem += " (retried with members?at= workaround: ok)";
                } catch (e2) {
                    problem += ` (retried with members?at= workaround: ${describeError(e2)})`;
                }
            }
            problems.push(problem);
        }
    }
    if (problems.length) throw new StepError(problems.join("; "));
});

await step("members_before_encrypting", ["encrypted_room"], async () => {
    const at = alice.client.store.getSyncToken();
    check(at, "alice's client has no sync token");
    const r = await api("GET", `/rooms/${enc(roomId)}/members`, {
        token: alice.login.access_token,
        query: { not_membership: "leave", at },
    });
    check(r.status === 200, describeResp(r));
    const joined = (r.json?.chunk || [])
        .filter((e) => e.type === "m.room.member" && e.content?.membership === "join")
        .map((e) => e.state_key);
    for (const u of [alice.userId, bob.userId]) {
        check(joined.includes(u), `${u} not joined in ${describeResp(r)}`);
    }
});

// key_backup part 2: the sdk uploads the room keys in the background; both message sessions
// (alice's own outbound one and the one bob shared with her) must reach the server.
if (keyBackupPart1Ok) {
    if (sent.length === 0) {
        failed.add("key_backup");
        steps.key_backup = "n/a: no message was sent (send_both_ways failed), nothing to back up";
    } else {
        await step("key_backup", [], async () => {
            const sessionIds = new Set();
            for (const s of sent) {
                const ev = alice.client.getRoom(roomId)?.findEventById(s.eventId);
                const sid = ev?.getWireContent()?.session_id;
                if (sid) sessionIds.add(sid);
            }
            check(sessionIds.size > 0, "no megolm session id known for the sent messages");
            await waitFor(
                async () => {
                    const r = await api("GET", "/room_keys/keys", {
                        token: alice.login.access_token,
                        query: { version: backupVersion },
                    });
                    if (r.status !== 200) throw new StepError(describeResp(r));
                    const have = Object.keys(r.json?.rooms?.[roomId]?.sessions || {});
                    return [...sessionIds].every((sid) => have.includes(sid));
                },
                `sessions ${[...sessionIds].join(",")} in GET /room_keys/keys`,
            );
        });
    }
}

await step("restore_new_device", ["secret_storage", "encrypted_room"], async () => {
    check(sent.length > 0, "no message was sent, nothing to restore");
    const encoded = recoveryKey.encodedPrivateKey; // the only thing the new device is given
    const login = await sdkPasswordLogin(alice.userId, "scenario alice (new device)");
    check(login.device_id !== alice.login.device_id, "new login reused the old device id");
    const client = await makeCryptoClient(login, () => cryptoApi.decodeRecoveryKey(encoded));
    const crypto = client.getCrypto();
    await crypto.loadSessionBackupPrivateKeyFromSecretStorage();
    await crypto.checkKeyBackupAndEnable();
    const result = await crypto.restoreKeyBackup();
    progress(`restoreKeyBackup: ${JSON.stringify(result)}`);
    check(result.imported > 0, `restoreKeyBackup imported nothing: ${JSON.stringify(result)}`);

    // History via GET /rooms/{id}/messages (dir=b, no from token), decrypted with the restored keys.
    const res = await client.createMessagesRequest(roomId, null, 50, "b");
    const mapper = client.getEventMapper();
    const events = (res.chunk || []).map(mapper);
    const problems = [];
    for (const s of sent) {
        const ev = events.find((e) => e.getId() === s.eventId);
        if (!ev) {
            problems.push(`${s.eventId} not in /messages`);
            continue;
        }
        await client.decryptEventIfNeeded(ev);
        if (ev.isBeingDecrypted?.()) await ev.getDecryptionPromise?.();
        if (ev.isDecryptionFailure()) await client.decryptEventIfNeeded(ev, { isRetry: true });
        const got = ev.getClearContent()?.body;
        if (got !== s.body) {
            problems.push(
                `${s.eventId} from ${s.sender}: ${ev.isDecryptionFailure() ? "decryption failure " + (ev.decryptionFailureReason || ev.getContent()?.body) : "body " + JSON.stringify(got)}`,
            );
        }
    }
    check(sent.length >= 2, `only ${sent.length} message(s) were sent, expected 2`);
    if (problems.length) throw new StepError(problems.join("; "));
});

// ---------------------------------------------------------------------------------------------
for (const c of clients) {
    try {
        c.stopClient();
    } catch {
        /* ignore */
    }
}
const allOk = STEP_NAMES.every((n) => steps[n] === "ok");
const line = JSON.stringify({ sdk: alias, version: sdkVersion, steps, http_errors: httpErrors }) + "\n";
writeStdout(line, () => process.exit(allOk ? 0 : 1));
