// Building many notes at once on worker threads (one wasm instance each), so setup takes
// seconds, not a minute, on 2 cores. Owns: splitting the work and collecting the bytes.
// Each worker re-plans all notes from the same seed (cheap, deterministic) and builds the
// ones whose index i satisfies i % workers == its number.

import os from "node:os";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { loadTrace, planNotes, buildNote, SEQUENTIAL_TRACES } from "./notes.mjs";
import { Random } from "./random.mjs";

function buildShare({ tracesDir, count, size, txns, seed, workers, index }) {
  const traces = SEQUENTIAL_TRACES.map((t) => loadTrace(tracesDir, t));
  const plans = planNotes({ traces, count, size, txns, random: new Random(seed, 1) });
  const out = [];
  for (let i = index; i < count; i += workers) out.push({ i, ...buildNote(plans[i]) });
  return out;
}

/** Returns [{bytes, changes, chars}] for notes 0..count-1, same for any worker count. */
export async function buildNotes({ tracesDir, count, size, txns, seed, workers = Math.min(2, os.availableParallelism?.() ?? 2) }) {
  const url = new URL(import.meta.url);
  const shares = await Promise.all(
    Array.from({ length: workers }, (_, index) =>
      new Promise((resolve, reject) => {
        const w = new Worker(url, { workerData: { tracesDir, count, size, txns, seed, workers, index } });
        w.once("message", resolve);
        w.once("error", reject);
        w.once("exit", (code) => code !== 0 && reject(new Error(`note builder ${index} exited with ${code}`)));
      }),
    ),
  );
  const notes = new Array(count);
  for (const share of shares) for (const n of share) notes[n.i] = n;
  return notes;
}

if (!isMainThread && workerData?.tracesDir) {
  const built = buildShare(workerData);
  parentPort.postMessage(built, built.map((n) => n.bytes.buffer));
}
