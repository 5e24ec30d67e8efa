// One automerge-repo peer in its own process, driven by baseline.mjs over the IPC channel.
// Owns: a Repo with NodeFS storage and (optionally) one websocket adapter on 127.0.0.1,
// and the operations the scenarios need (make notes, edit, find all, wait for heads).
// Must not: print to stdout (the orchestrator's stdout carries the one JSON result; this
// process's stdout and stderr both go to stderr), or listen/connect anywhere but 127.0.0.1.
//
// Protocol: the parent sends {id, op, args}; we answer {id, result} or {id, error}.
// Unprompted reports are {event, ...}. Timestamps are process.hrtime.bigint() as strings:
// CLOCK_MONOTONIC on Linux, one clock for every process on the machine.

import fs from "node:fs";
import http from "node:http";
import { Repo } from "@automerge/automerge-repo";
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs";
import { WebSocketClientAdapter, WebSocketServerAdapter } from "@automerge/automerge-repo-network-websocket";
import * as A from "@automerge/automerge";
import { WebSocketServer } from "ws";
import { buildNotes } from "./build-notes.mjs";
import { Random } from "./random.mjs";

const name = process.argv[2] ?? "peer";
const log = (...args) => console.error(`[${name}]`, ...args);
const now = () => process.hrtime.bigint();
const sameHeads = (a, b) => a.length === b.length && [...a].sort().join() === [...b].sort().join();

let repo;
let httpServer;
/** Raw TCP sockets accepted by the websocket server: bytes counted here include the HTTP
 * upgrade, websocket framing and pings, in both directions. */
const sockets = [];
let latency; // { handle, random } for the latency note on the editing side

const ops = {
  /** Starts the repo. `listen`: serve websockets on 127.0.0.1:0; `connect`: dial that
   * port; neither: offline (storage only). */
  async open({ storageDir, listen = false, connect = null, keepAliveMs = 30000 }) {
    const network = [];
    let port = null;
    if (listen) {
      httpServer = http.createServer((_, res) => res.writeHead(404).end());
      httpServer.on("connection", (socket) => sockets.push(socket));
      const wss = new WebSocketServer({ server: httpServer });
      await new Promise((resolve, reject) => {
        httpServer.once("error", reject);
        httpServer.listen(0, "127.0.0.1", resolve);
      });
      port = httpServer.address().port;
      network.push(new WebSocketServerAdapter(wss, keepAliveMs));
    } else if (connect !== null) {
      network.push(new WebSocketClientAdapter(`ws://127.0.0.1:${connect}`));
    }
    repo = new Repo({ storage: new NodeFSStorageAdapter(storageDir), network });
    const openedAt = String(now());
    // A client waits for the server's peer message before it looks for notes: the client
    // adapter declares itself ready after 1 s even with no peer, and a find() then fails
    // with "unavailable" (as an app would see while a busy server has not answered yet).
    let connectedAt = null;
    if (connect !== null) {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no peer on 127.0.0.1:${connect} after 30 s`)), 30000);
        repo.networkSubsystem.once("peer", () => (clearTimeout(timer), resolve()));
      });
      connectedAt = String(now());
    }
    return { port, peerId: repo.peerId, openedAt, connectedAt };
  },

  /** Bytes through the websocket server's sockets so far (both directions). */
  wire() {
    let rx = 0;
    let tx = 0;
    for (const s of sockets) {
      rx += s.bytesRead;
      tx += s.bytesWritten;
    }
    return { rx, tx, connections: sockets.length };
  },

  /** Builds `count` notes from the traces (see notes.mjs, build-notes.mjs), imports them
   * (repo.import), persists them and writes [{url, heads}] to `listFile`. */
  async createNotes({ tracesDir, count, size, txns, seed, listFile }) {
    let started = performance.now();
    const notes = await buildNotes({ tracesDir, count, size, txns, seed });
    const buildMs = performance.now() - started;
    log(`built ${count} notes in ${Math.round(buildMs)} ms; importing them`);
    started = performance.now();
    const list = [];
    let savedBytes = 0;
    let changes = 0;
    let chars = 0;
    for (const [i, note] of notes.entries()) {
      const handle = repo.import(note.bytes);
      savedBytes += A.save(handle.doc()).length;
      changes += note.changes;
      chars += note.chars;
      list.push({ url: handle.url, heads: handle.heads() });
      notes[i] = null;
      if ((i + 1) % 250 === 0) log(`imported ${i + 1}/${count} notes`);
    }
    await repo.flush();
    // Let the repo's own throttled saves (100 ms after each import) run out, so the server
    // is idle when the client connects.
    await new Promise((r) => setTimeout(r, 1000));
    await repo.flush();
    fs.writeFileSync(listFile, JSON.stringify(list));
    return {
      count,
      savedBytes,
      meanChanges: changes / count,
      meanChars: chars / count,
      buildMs,
      importMs: performance.now() - started,
    };
  },

  /** Finds every note in `listFile` (all at once, as an app opening its notes would) and
   * waits until each one's heads equal `heads` in the file. */
  async fetchAll({ listFile, timeoutMs = 120000 }) {
    const list = JSON.parse(fs.readFileSync(listFile, "utf8"));
    const started = now();
    const deadline = Date.now() + timeoutMs;
    let present = 0;
    let retries = 0;
    let firstAt = null;
    const one = async ({ url, heads }) => {
      let handle;
      for (;;) {
        try {
          handle = await repo.find(url);
          break;
        } catch (e) {
          if (Date.now() > deadline) throw new Error(`${url}: ${e.message}`);
          if (retries++ === 0) log(`find failed (${e.message}); retrying such notes every 1 s`);
          await new Promise((r) => setTimeout(r, 1000));
        }
      }
      firstAt ??= now();
      await untilHeads(handle, heads, deadline);
      if (++present % 100 === 0 || present === list.length) log(`client has ${present}/${list.length} notes at their expected heads`);
    };
    await Promise.all(list.map(one));
    const done = now();
    return {
      count: list.length,
      retries,
      startedAt: String(started),
      firstReadyAt: String(firstAt ?? done),
      doneAt: String(done),
    };
  },

  /** Waits until every note in `expected` ({url: heads}) has those heads here. */
  async awaitHeads({ expected, timeoutMs = 120000 }) {
    const deadline = Date.now() + timeoutMs;
    await Promise.all(
      Object.entries(expected).map(async ([url, heads]) => untilHeads(await repo.find(url), heads, deadline)),
    );
    return { doneAt: String(now()) };
  },

  /** Current heads of the given notes, as {url: heads}. */
  async heads({ urls }) {
    const out = {};
    for (const url of urls) out[url] = (await repo.find(url)).heads();
    return out;
  },

  /** Types `edits` letters into each note at one seeded position (one change per key);
   * returns the notes' new heads. */
  async editNotes({ urls, edits, seed }) {
    const random = new Random(seed, 2);
    const out = {};
    for (const url of urls) {
      const handle = await repo.find(url);
      let pos = random.below(handle.doc().text.length + 1);
      for (let k = 0; k < edits; k++) {
        const ch = random.letter();
        handle.change((d) => A.splice(d, ["text"], pos++, 0, ch));
      }
      out[url] = handle.heads();
    }
    await repo.flush(urls.map((u) => u.replace(/^automerge:/, "")));
    return out;
  },

  /** Latency, editing side: makes the shared note. */
  createLatencyNote({ text, seed }) {
    const handle = repo.create({ text });
    latency = { handle, random: new Random(seed, 3) };
    return { url: handle.url, head: A.getHeads(handle.doc())[0] };
  },

  /** Latency, editing side: one keystroke at a seeded position, stamped just before it. */
  edit() {
    const { handle, random } = latency;
    const pos = random.below(handle.doc().text.length + 1);
    const ch = random.letter();
    const t0 = now();
    handle.change((d) => A.splice(d, ["text"], pos, 0, ch));
    return { t0: String(t0), head: A.getHeads(handle.doc())[0] };
  },

  /** Latency, observing side: finds the note and reports every "change" it emits, stamped
   * first thing in the listener, with the doc's heads (the editing side's history is linear,
   * so one head names every edit up to it). */
  async watch({ url }) {
    const handle = await repo.find(url);
    handle.on("change", ({ doc }) => {
      const t1 = now();
      process.send({ event: "seen", t1: String(t1), heads: A.getHeads(doc) });
    });
    return { heads: A.getHeads(handle.doc()) };
  },

  /** Saves everything and stops; the process exits after answering. */
  async close() {
    if (repo) await repo.shutdown();
    if (httpServer) {
      for (const s of sockets) s.destroy();
      await new Promise((r) => httpServer.close(r));
    }
    setImmediate(() => process.exit(0));
    return {};
  },
};

/** Resolves once `handle` has exactly `heads`, failing after `deadline` (epoch ms). */
function untilHeads(handle, heads, deadline) {
  if (sameHeads(handle.heads(), heads)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      handle.off("heads-changed", check);
      reject(new Error(`${handle.url} still at ${handle.heads()} instead of ${heads}`));
    }, Math.max(0, deadline - Date.now()));
    function check() {
      if (!sameHeads(handle.heads(), heads)) return;
      clearTimeout(timer);
      handle.off("heads-changed", check);
      resolve();
    }
    handle.on("heads-changed", check);
  });
}

process.on("message", async ({ id, op, args }) => {
  try {
    if (!ops[op]) throw new Error(`unknown op ${op}`);
    const result = await ops[op](args ?? {});
    process.send({ id, result });
  } catch (e) {
    process.send({ id, error: e?.stack ?? String(e) });
  }
});
process.on("disconnect", () => process.exit(0));
process.send({ event: "started", at: String(now()) });
