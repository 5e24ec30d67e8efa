#!/usr/bin/env node
// The automerge-repo 2.x baseline peer for `make bench`: the same three measurements as
// Peernotes' own benchmark (keystroke latency, initial sync of many notes, reconnect after
// offline edits), made with automerge-repo over websockets on 127.0.0.1.
//
//   node baseline.mjs latency      [--edits 1000] [--paced-ms 150] [--warmup 10] [--text-size 2048]
//   node baseline.mjs initial-sync [--notes 1000] [--size 5000] [--txns 300] [--traces DIR]
//   node baseline.mjs reconnect    [--notes 1000] [--changed 10] [--edits-per-note 5] [...initial-sync flags]
//   common: [--seed 1] [--keepalive-ms 30000] [--timeout-ms 120000] [--traces DIR]
//
// Prints ONE JSON object on stdout; progress goes to stderr. Exits 1 (nothing on stdout)
// if the scenario fails. Owns: flags, the temp dir, the output. The scenarios live in lib/.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Peer } from "./lib/child.mjs";
import { latency } from "./lib/latency.mjs";
import { initialSyncScenario, reconnectScenario } from "./lib/sync.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SCENARIOS = { latency, "initial-sync": initialSyncScenario, reconnect: reconnectScenario };

function usage(problem) {
  console.error(`${problem}\nusage: node baseline.mjs <${Object.keys(SCENARIOS).join("|")}> [--flags]  (see the top of baseline.mjs)`);
  process.exit(2);
}

function options(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: Object.fromEntries(
        ["edits", "paced-ms", "warmup", "text-size", "rows", "notes", "size", "txns", "changed", "edits-per-note",
          "seed", "keepalive-ms", "timeout-ms", "traces"].map((k) => [k, { type: "string" }]),
      ),
    });
  } catch (e) {
    usage(e.message);
  }
  const [scenario, ...extra] = parsed.positionals;
  if (!SCENARIOS[scenario]) usage(scenario ? `unknown scenario '${scenario}'` : "no scenario given");
  if (extra.length) usage(`unexpected arguments: ${extra.join(" ")}`);
  const v = parsed.values;
  const int = (key, fallback) => {
    if (v[key] === undefined) return fallback;
    const n = Number(v[key]);
    if (!Number.isInteger(n) || n < 0) usage(`--${key} must be a non-negative integer, got '${v[key]}'`);
    return n;
  };
  const rows = (v.rows ?? "back_to_back,paced").split(",").map((r) => r.trim().replaceAll("-", "_"));
  if (rows.some((r) => r !== "back_to_back" && r !== "paced")) usage("--rows takes back-to-back and/or paced");
  const o = {
    scenario,
    edits: int("edits", 1000),
    pacedMs: int("paced-ms", 150),
    warmup: int("warmup", 10),
    textSize: int("text-size", 2048),
    rows,
    notes: int("notes", 1000),
    size: int("size", 5000),
    txns: int("txns", 300),
    changed: int("changed", 10),
    editsPerNote: int("edits-per-note", 5),
    seed: int("seed", 1),
    keepAliveMs: int("keepalive-ms", 30000),
    timeoutMs: int("timeout-ms", 120000),
    traces: path.resolve(v.traces ?? path.join(HERE, "../../tests/data/traces")),
  };
  if (o.scenario === "reconnect" && 2 * o.changed > o.notes) usage("--changed must be at most half of --notes");
  if (o.edits < 1 || o.notes < 1) usage("--edits and --notes must be at least 1");
  return o;
}

function versions() {
  const version = (pkg) => {
    try {
      return JSON.parse(fs.readFileSync(path.join(HERE, "node_modules", pkg, "package.json"), "utf8")).version;
    } catch {
      return null;
    }
  };
  return {
    "@automerge/automerge-repo": version("@automerge/automerge-repo"),
    "@automerge/automerge-repo-network-websocket": version("@automerge/automerge-repo-network-websocket"),
    "@automerge/automerge-repo-storage-nodefs": version("@automerge/automerge-repo-storage-nodefs"),
    "@automerge/automerge": version("@automerge/automerge"),
    ws: version("ws"),
    node: process.version,
  };
}

async function main() {
  const o = options(process.argv.slice(2));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "peernotes-amrepo-"));
  const stop = () => {
    for (const p of Peer.running) p.kill();
    if (process.env.BENCH_KEEP_TMP) console.error(`[baseline] kept ${tmp} (BENCH_KEEP_TMP)`);
    else fs.rmSync(tmp, { recursive: true, force: true });
  };
  process.once("SIGINT", () => (stop(), process.exit(130)));
  process.once("SIGTERM", () => (stop(), process.exit(143)));
  const started = performance.now();
  try {
    const out = await SCENARIOS[o.scenario](o, tmp);
    const report = {
      scenario: o.scenario,
      baseline: "automerge-repo",
      versions: versions(),
      params: { ...out.params, seed: o.seed, keepalive_ms: o.keepAliveMs },
      results: out.results,
      run_ms: Math.round(performance.now() - started),
      machine: { cpus: os.cpus().length, platform: `${os.platform()} ${os.release()}` },
      notes: out.notes,
    };
    process.stdout.write(JSON.stringify(report, null, 2) + "\n");
  } catch (e) {
    console.error(`[baseline] ${o.scenario} failed: ${e.stack ?? e}`);
    process.exitCode = 1;
  } finally {
    stop();
  }
}

main();
