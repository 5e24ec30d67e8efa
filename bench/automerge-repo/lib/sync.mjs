// Scenarios `initial-sync` and `reconnect`: a server repo holding many notes and a client
// repo that catches up with it. Owns: the sequence of peer processes for each scenario and
// the timing/byte figures. Must not: make the notes (notes.mjs) or touch a repo itself.
//
// Processes: the server lives for the whole scenario; each client phase is a fresh node
// process over the same client storage dir (a restart, the stable way per RECIPES).

import fs from "node:fs";
import path from "node:path";
import { Peer } from "./child.mjs";
import { Random } from "./random.mjs";
import { msBetween, round, wireDelta } from "./summary.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until the server's socket counters stop moving for `quietMs` (max `maxMs`). */
async function settle(server, quietMs = 500, maxMs = 10000) {
  const until = Date.now() + maxMs;
  let last = await server.call("wire");
  let quietSince = Date.now();
  while (Date.now() < until) {
    await sleep(100);
    const w = await server.call("wire");
    if (w.rx !== last.rx || w.tx !== last.tx) {
      last = w;
      quietSince = Date.now();
    } else if (Date.now() - quietSince >= quietMs) break;
  }
  return last;
}

/** How many notes in a NodeFS storage dir have a saved sync state (layout: <2 chars>/<rest
 * of the doc id>/sync-state/<peer storage id>). */
function notesWithSyncState(storageDir) {
  let n = 0;
  for (const a of fs.readdirSync(storageDir, { withFileTypes: true })) {
    if (!a.isDirectory()) continue;
    for (const b of fs.readdirSync(path.join(storageDir, a.name), { withFileTypes: true })) {
      if (b.isDirectory() && fs.existsSync(path.join(storageDir, a.name, b.name, "sync-state"))) n++;
    }
  }
  return n;
}

const notesMade = (o, built) =>
  `Notes: ${o.notes} docs {text}, built from tests/data/traces (seph-blog1 and automerge-paper alternately): ` +
  `a ${o.size}-char window of the trace's text at a seeded txn offset is inserted as the first change, then the next ` +
  `${o.txns} trace txns are replayed onto the window, one Automerge change per txn (edits outside the window dropped), ` +
  `giving ${round(built.meanChanges, 1)} changes and ${Math.round(built.meanChars)} chars per note on average. ` +
  `The notes are built on worker threads, then the server imports them (repo.import, so they stay loaded in its memory: a warm server) and flushes them to its NodeFS storage before any client starts; that setup is not timed.`;

/** Starts the server, makes the notes and lets a fresh client fetch them all. Leaves the
 * server running and the client stopped (saved) for the caller. */
async function initialSync(o, tmp) {
  const listFile = path.join(tmp, "notes.json");
  const server = await Peer.spawn("server");
  const { port } = await server.call("open", { storageDir: path.join(tmp, "server"), listen: true, keepAliveMs: o.keepAliveMs });
  console.error(`[initial-sync] building ${o.notes} notes on the server`);
  const built = await server.call("createNotes", {
    tracesDir: o.traces, count: o.notes, size: o.size, txns: o.txns, seed: o.seed, listFile,
  });
  console.error(`[initial-sync] notes built in ${Math.round(built.buildMs)} ms, imported in ${Math.round(built.importMs)} ms; starting the client`);
  const before = await server.call("wire");
  const client = await Peer.spawn("client");
  const opened = await client.call("open", { storageDir: path.join(tmp, "client"), connect: port });
  const fetched = await client.call("fetchAll", { listFile, timeoutMs: o.timeoutMs });
  const atDone = await server.call("wire");
  const settled = await settle(server);
  await client.close();
  const result = {
    notes: o.notes,
    ms_client_spawn_to_all_synced: round(msBetween(client.spawnedAt, fetched.doneAt), 1),
    ms_repo_open_to_all_synced: round(msBetween(opened.openedAt, fetched.doneAt), 1),
    ms_client_process_start: round(msBetween(client.spawnedAt, client.loadedAt), 1),
    ms_repo_open_to_connected: round(msBetween(opened.openedAt, opened.connectedAt), 1),
    ms_repo_open_to_first_note: round(msBetween(opened.openedAt, fetched.firstReadyAt), 1),
    find_retries: fetched.retries,
    wire_bytes_at_all_synced: wireDelta(before, atDone),
    wire_bytes_settled: wireDelta(before, settled),
    saved_bytes_total: built.savedBytes,
    saved_bytes_mean: Math.round(built.savedBytes / o.notes),
    mean_changes_per_note: round(built.meanChanges, 1),
    mean_chars_per_note: Math.round(built.meanChars),
    setup_build_ms: Math.round(built.buildMs),
    setup_import_ms: Math.round(built.importMs),
  };
  result.wire_to_saved_ratio = round(result.wire_bytes_settled.total / built.savedBytes, 3);
  return { server, port, listFile, built, result };
}

const syncNotes = (o) => [
  "Server and client are separate node processes with NodeFS storage; websocket on 127.0.0.1, ephemeral port.",
  "The client waits for the server's peer message (ms_repo_open_to_connected), then find()s every note URL (read from a file the server wrote) all at once; a note counts as synced when its heads equal the expected heads. A find() that fails 'unavailable' is retried every 1 s (find_retries counts them; 0 in a clean run).",
  "Times are process.hrtime.bigint() (CLOCK_MONOTONIC) stamps from the processes involved; ms_client_spawn_to_all_synced includes node start-up and wasm load (ms_client_process_start).",
  "Wire bytes are counted at the server's raw TCP sockets (bytesRead/bytesWritten): HTTP upgrade, websocket framing and pings included. '_at_all_synced' is taken when the last note matched, '_settled' after 500 ms without traffic (trailing acks).",
  "saved_bytes = sum of Automerge.save(doc).length over the server's notes.",
  `Websocket server adapter keepalive raised from 5 s to ${o.keepAliveMs} ms (the default can drop the client while the server is busy).`,
];

export async function initialSyncScenario(o, tmp) {
  const { server, built, result } = await initialSync(o, tmp);
  await server.close();
  return {
    results: result,
    params: { notes: o.notes, size: o.size, txns: o.txns },
    notes: [notesMade(o, built), ...syncNotes(o)],
  };
}

export async function reconnectScenario(o, tmp) {
  console.error("[reconnect] phase 1: initial sync");
  const { server, port, listFile, built, result: initial } = await initialSync(o, tmp);
  try {
    const list = JSON.parse(fs.readFileSync(listFile, "utf8"));
    const picks = new Random(o.seed, 5).sample(list.length, 2 * o.changed).map((i) => list[i].url);
    const serverSide = picks.slice(0, o.changed);
    const clientSide = picks.slice(o.changed);

    console.error(`[reconnect] phase 2: ${o.changed} notes edited on the server, ${o.changed} on the client (offline restart)`);
    const serverHeads = await server.call("editNotes", { urls: serverSide, edits: o.editsPerNote, seed: o.seed });
    const offline = await Peer.spawn("client-offline");
    await offline.call("open", { storageDir: path.join(tmp, "client") });
    const clientHeads = await offline.call("editNotes", { urls: clientSide, edits: o.editsPerNote, seed: o.seed + 1 });
    await offline.close();

    const expected = Object.fromEntries(list.map(({ url, heads }) => [url, heads]));
    Object.assign(expected, serverHeads, clientHeads);
    const expectedFile = path.join(tmp, "expected.json");
    fs.writeFileSync(expectedFile, JSON.stringify(Object.entries(expected).map(([url, heads]) => ({ url, heads }))));

    const syncStatesSaved = {
      client: notesWithSyncState(path.join(tmp, "client")),
      server: notesWithSyncState(path.join(tmp, "server")),
    };

    console.error("[reconnect] phase 3: client restarts with the network");
    const before = await server.call("wire");
    const serverDone = server.call("awaitHeads", { expected, timeoutMs: o.timeoutMs });
    const client = await Peer.spawn("client");
    const opened = await client.call("open", { storageDir: path.join(tmp, "client"), connect: port });
    const clientDone = client.call("fetchAll", { listFile: expectedFile, timeoutMs: o.timeoutMs });
    const [s, c] = await Promise.all([serverDone, clientDone]);
    const atDone = await server.call("wire");
    const settled = await settle(server);
    await client.close();
    const last = BigInt(s.doneAt) > BigInt(c.doneAt) ? s.doneAt : c.doneAt;
    return {
      results: {
        notes: o.notes,
        changed_per_side: o.changed,
        edits_per_changed_note: o.editsPerNote,
        ms_client_spawn_to_both_synced: round(msBetween(client.spawnedAt, last), 1),
        ms_repo_open_to_both_synced: round(msBetween(opened.openedAt, last), 1),
        ms_repo_open_to_server_has_client_changes: round(msBetween(opened.openedAt, s.doneAt), 1),
        ms_repo_open_to_client_has_all: round(msBetween(opened.openedAt, c.doneAt), 1),
        ms_client_process_start: round(msBetween(client.spawnedAt, client.loadedAt), 1),
        ms_repo_open_to_connected: round(msBetween(opened.openedAt, opened.connectedAt), 1),
        find_retries: c.retries,
        notes_with_saved_sync_state_before_reconnect: syncStatesSaved,
        wire_bytes_at_both_synced: wireDelta(before, atDone),
        wire_bytes_settled: wireDelta(before, settled),
        initial_sync: initial,
      },
      params: { notes: o.notes, changed: o.changed, edits_per_note: o.editsPerNote, size: o.size, txns: o.txns },
      notes: [
        notesMade(o, built),
        ...syncNotes(o),
        "Phase 1 = initial-sync (its figures are under results.initial_sync); then the client process saves and exits.",
        `Phase 2: ${o.changed} seeded notes are edited in the running server repo and ${o.changed} other notes by a client process restarted over the same storage with no network adapter, then saved and stopped; each edit is ${o.editsPerNote} one-letter changes typed at one seeded position.`,
        "Phase 3: a new client process over the same storage connects and find()s all notes; 'both synced' = the client has every note at the expected heads (server's for server-edited notes, its own for client-edited ones, unchanged otherwise) and the server has the client's edits. Times count from that process's spawn / repo open; wire bytes are for this reconnect only.",
        "notes_with_saved_sync_state_before_reconnect: automerge-repo 2.5 saves sync states through ONE 100 ms throttle per remote storage id that keeps only the latest pending save, so after syncing many notes at once only a few notes' sync states reach storage; the others start the reconnect from an empty sync state.",
        "A client restart is used instead of reconnecting the same Repo, which RECIPES records as able to loop without converging in automerge-repo 2.5.",
      ],
    };
  } finally {
    await server.close();
  }
}
