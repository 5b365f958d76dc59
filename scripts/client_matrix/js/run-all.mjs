// Runs scenario.mjs for every sdk alias in package.json, one after the other (never in parallel),
// prints each version's JSON line to stdout and a step x version table to stderr.
//
// Usage: node run-all.mjs <homeserverBaseUrl> [alias ...]     (default: every "sdk*" dependency)
// Exit code: 0 if every version passed every step, else 1.

import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const [baseUrl, ...wanted] = process.argv.slice(2);
if (!baseUrl) {
    process.stderr.write("usage: node run-all.mjs <homeserverBaseUrl> [alias ...]\n");
    process.exit(2);
}
const deps = JSON.parse(readFileSync(join(here, "package.json"), "utf8")).dependencies;
const aliases = wanted.length ? wanted : Object.keys(deps).filter((n) => n.startsWith("sdk"));

const results = [];
for (const alias of aliases) {
    process.stderr.write(`--- ${alias}\n`);
    const run = spawnSync(process.execPath, [join(here, "scenario.mjs"), alias, baseUrl], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "inherit"],
        timeout: 15 * 60 * 1000,
    });
    const line = (run.stdout || "").trim().split("\n").pop();
    let parsed;
    try {
        parsed = JSON.parse(line);
    } catch {
        parsed = { sdk: alias, version: null, steps: { run: `FAIL: no result line (exit ${run.status}, ${run.signal || ""})` } };
    }
    process.stdout.write(JSON.stringify(parsed) + "\n");
    results.push(parsed);
}

const stepNames = [...new Set(results.flatMap((r) => Object.keys(r.steps)))];
const cell = (v) => (v === undefined ? "-" : v === "ok" ? "ok" : v.split(":")[0]);
const header = ["step", ...results.map((r) => `${r.sdk}@${r.version}`)];
const rows = stepNames.map((s) => [s, ...results.map((r) => cell(r.steps[s]))]);
const widths = header.map((_, i) => Math.max(...[header, ...rows].map((row) => row[i].length)));
for (const row of [header, ...rows]) {
    process.stderr.write(row.map((c, i) => c.padEnd(widths[i])).join("  ") + "\n");
}
const allOk = results.every((r) => Object.values(r.steps).every((v) => v === "ok"));
process.exit(allOk ? 0 : 1);
