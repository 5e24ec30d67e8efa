// Scenario `latency`: one keystroke on A (the websocket server side) until B's handle emits
// the "change" that contains it. Owns: driving the edits (back-to-back, then paced) and
// matching A's edit stamps with B's observation stamps.
//
// Matching: only A edits, so A's history is linear and B's heads are always one of A's
// heads; a "seen" report with head h means every edit up to h's edit is visible at t1.

import path from "node:path";
import { Peer } from "./child.mjs";
import { loadTrace, excerpt } from "./notes.mjs";
import { Random } from "./random.mjs";
import { latencyRow, msBetween, wireDelta } from "./summary.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Edits made on A, in order, and when B first had each. */
class EditLog {
  edits = []; // {row, head, t0, t1}
  #seqByHead = new Map();
  #visibleUpTo = -1;
  #unmatched = []; // "seen" reports whose head A has not reported yet
  #waiters = []; // {seq, resolve}

  add(row, { head, t0 }) {
    const seq = this.edits.push({ row, head, t0: BigInt(t0), t1: null }) - 1;
    this.#seqByHead.set(head, seq);
    const reports = this.#unmatched;
    this.#unmatched = [];
    for (const r of reports) this.seen(r);
    return seq;
  }

  seen({ heads, t1 }) {
    const seqs = heads.map((h) => this.#seqByHead.get(h)).filter((s) => s !== undefined);
    if (seqs.length < heads.length) {
      this.#unmatched.push({ heads, t1 });
      return;
    }
    const upTo = Math.max(...seqs);
    for (let s = this.#visibleUpTo + 1; s <= upTo; s++) this.edits[s].t1 = BigInt(t1);
    this.#visibleUpTo = Math.max(this.#visibleUpTo, upTo);
    this.#waiters = this.#waiters.filter((w) => (w.seq <= this.#visibleUpTo ? (w.resolve(), false) : true));
  }

  visible(seq, timeoutMs) {
    if (seq <= this.#visibleUpTo) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`edit ${seq} not seen by B within ${timeoutMs} ms`)), timeoutMs);
      this.#waiters.push({ seq, resolve: () => (clearTimeout(timer), resolve()) });
    });
  }

  row(name) {
    return this.edits.filter((e) => e.row === name).map((e) => msBetween(e.t0, e.t1));
  }
}

export async function latency(opts, tmp) {
  const { edits, pacedMs, warmup, seed, keepAliveMs, timeoutMs } = opts;
  const rows = opts.rows;
  const a = await Peer.spawn("A");
  const b = await Peer.spawn("B");
  try {
    const { port } = await a.call("open", { storageDir: path.join(tmp, "a"), listen: true, keepAliveMs });
    await b.call("open", { storageDir: path.join(tmp, "b"), connect: port });
    const text = excerpt(loadTrace(opts.traces, "seph-blog1"), opts.textSize, new Random(seed, 4));
    const { url } = await a.call("createLatencyNote", { text, seed });
    await b.call("watch", { url });
    const log = new EditLog();
    b.on("seen", (r) => log.seen(r));

    const edit = async (row) => log.add(row, await a.call("edit"));
    const results = {};
    for (const row of rows) {
      for (let i = 0; i < warmup; i++) await log.visible(await edit("warmup"), timeoutMs);
      await sleep(300);
      const before = await a.call("wire");
      const started = performance.now();
      if (row === "back_to_back") {
        for (let i = 0; i < edits; i++) {
          await log.visible(await edit(row), timeoutMs);
          if ((i + 1) % 100 === 0) console.error(`[latency] back-to-back ${i + 1}/${edits}`);
        }
      } else {
        // Paced: edit i is sent at start + i * pacedMs, whether or not B has seen i - 1.
        const sent = [];
        for (let i = 0; i < edits; i++) {
          await sleep(started + i * pacedMs - performance.now());
          sent.push(edit(row));
          if ((i + 1) % 100 === 0) console.error(`[latency] paced ${i + 1}/${edits}`);
        }
        const seqs = await Promise.all(sent);
        await log.visible(Math.max(...seqs), timeoutMs);
      }
      await sleep(300);
      const wallMs = Math.round(performance.now() - started);
      const bytes = wireDelta(before, await a.call("wire"));
      results[row] = {
        ...latencyRow(log.row(row)),
        ...(row === "paced" ? { interval_ms: pacedMs } : {}),
        wall_ms: wallMs,
        wire_bytes: { ...bytes, per_edit: Math.round(bytes.total / edits) },
      };
    }
    return {
      results,
      params: { edits, paced_ms: pacedMs, warmup, text_chars: text.length, rows },
      notes: [
        "A = repo with the websocket server adapter, B = repo with the client adapter, each in its own node process, on 127.0.0.1.",
        "Latency = B's handle 'change' event (stamped first thing in the listener) minus the stamp taken just before A's handle.change(); both stamps are process.hrtime.bigint() = CLOCK_MONOTONIC, shared by the two processes.",
        "Each edit is one A.splice of one random lowercase letter at a seeded random position in ['text'], one change per keystroke.",
        "back_to_back: the next edit is made as soon as B has seen the previous one; this mostly measures automerge-repo's sync throttle: DocSynchronizer syncs a changed doc at most once per 100 ms (syncDebounceRate, not settable through Repo), so a new edit waits for the rest of the 100 ms window.",
        `paced: one edit every ${pacedMs} ms (more than the 100 ms throttle), so each edit is sent without waiting; this is the per-keystroke latency of a typist slower than 10 keys/s.`,
        `${warmup} warm-up edits before each row are not counted. wire_bytes count both directions at A's raw TCP socket (websocket framing and keepalive pings included).`,
        `Websocket server adapter keepalive raised from 5 s to ${keepAliveMs} ms.`,
      ],
    };
  } finally {
    await Promise.allSettled([b.close(), a.close()]);
  }
}
