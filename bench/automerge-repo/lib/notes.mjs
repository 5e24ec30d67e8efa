// Note documents for the baseline, made from the editing traces in tests/data/traces.
// Owns: reading a sequential trace, replaying it as plain text, and turning a window of
// it into an Automerge document `{text}` with a realistic per-keystroke history.
// Must not: touch the network or a repo; it only returns document bytes.
//
// How a note is made (stated in every scenario's "notes" field too):
//   1. pick a txn offset t in a trace (seeded), where the text is already >= `size` chars;
//   2. take the `size`-char window of the text at t around the position edited by txn t;
//   3. the document's first change inserts that window; then the next `txns` trace txns
//      are replayed onto it, one Automerge change per txn (patches outside the window
//      are dropped, those before it shift it), with the trace's timestamps.

import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import * as A from "@automerge/automerge";

export const SEQUENTIAL_TRACES = ["seph-blog1", "automerge-paper"];

/** Reads `<dir>/<name>.json.gz`; positions in it are char offsets. */
export function loadTrace(dir, name) {
  const file = path.join(dir, `${name}.json.gz`);
  let trace;
  try {
    trace = JSON.parse(zlib.gunzipSync(fs.readFileSync(file)).toString("utf8"));
  } catch (e) {
    throw new Error(`cannot read trace ${file}: ${e.message} (pass --traces <dir with ${name}.json.gz>)`);
  }
  if (!Array.isArray(trace.txns) || typeof trace.endContent !== "string") {
    throw new Error(`${file} is not a sequential trace ({startContent, endContent, txns})`);
  }
  // Trace positions count chars (code points); Automerge JS counts UTF-16 units. They
  // agree as long as no char lies outside the BMP, which holds for the shipped traces.
  if (/[\u{10000}-\u{10FFFF}]/u.test(trace.endContent)) {
    throw new Error(`${file} has chars outside the BMP; positions would need converting`);
  }
  return { name, startContent: trace.startContent ?? "", endContent: trace.endContent, txns: trace.txns };
}

/** A text buffer with a movable gap: cheap edits near the previous one (i.e. typing). */
class GapText {
  #buf;
  #gapStart;
  #gapEnd;

  constructor(initial) {
    this.#buf = new Uint16Array(Math.max(1024, initial.length * 2));
    for (let i = 0; i < initial.length; i++) this.#buf[i] = initial.charCodeAt(i);
    this.#gapStart = initial.length;
    this.#gapEnd = this.#buf.length;
  }

  get length() {
    return this.#buf.length - (this.#gapEnd - this.#gapStart);
  }

  #moveGap(pos) {
    if (pos < this.#gapStart) {
      const n = this.#gapStart - pos;
      this.#buf.copyWithin(this.#gapEnd - n, pos, this.#gapStart);
      this.#gapStart = pos;
      this.#gapEnd -= n;
    } else if (pos > this.#gapStart) {
      const n = pos - this.#gapStart;
      this.#buf.copyWithin(this.#gapStart, this.#gapEnd, this.#gapEnd + n);
      this.#gapStart += n;
      this.#gapEnd += n;
    }
  }

  splice(pos, del, ins) {
    this.#moveGap(pos);
    this.#gapEnd = Math.min(this.#buf.length, this.#gapEnd + del);
    if (ins.length > this.#gapEnd - this.#gapStart) {
      const grown = new Uint16Array((this.length + ins.length) * 2);
      grown.set(this.#buf.subarray(0, this.#gapStart), 0);
      const tail = this.#buf.subarray(this.#gapEnd);
      grown.set(tail, grown.length - tail.length);
      this.#gapEnd = grown.length - tail.length;
      this.#buf = grown;
    }
    for (let i = 0; i < ins.length; i++) this.#buf[this.#gapStart++] = ins.charCodeAt(i);
  }

  slice(from, to) {
    this.#moveGap(this.length);
    let out = "";
    for (let i = from; i < to; i += 8192) {
      out += String.fromCharCode.apply(null, this.#buf.subarray(i, Math.min(to, i + 8192)));
    }
    return out;
  }
}

/**
 * Plans `count` notes: for each, the trace, the txn offset and the starting window.
 * Note i uses trace i % traces.length. One plain-text replay per trace.
 */
export function planNotes({ traces, count, size, txns, random }) {
  const plans = new Array(count);
  traces.forEach((trace, ti) => {
    const ids = [];
    for (let i = ti; i < count; i += traces.length) ids.push(i);
    if (ids.length === 0) return;
    // First txn at which the text is at least `size` chars long.
    let len = trace.startContent.length;
    let first = -1;
    for (let t = 0; t < trace.txns.length && first < 0; t++) {
      if (len >= size) first = t;
      for (const [, del, ins] of trace.txns[t].patches) len += ins.length - del;
    }
    const last = trace.txns.length - txns;
    if (first < 0 || last <= first) {
      throw new Error(`trace ${trace.name} is too short for ${size}-char notes with ${txns} txns each`);
    }
    const offsets = ids.map((id) => ({ id, t: first + random.below(last - first) })).sort((a, b) => a.t - b.t);
    const text = new GapText(trace.startContent);
    let t = 0;
    for (const { id, t: at } of offsets) {
      for (; t < at; t++) for (const [pos, del, ins] of trace.txns[t].patches) text.splice(pos, del, ins);
      const cursor = Math.min(trace.txns[at].patches[0]?.[0] ?? 0, text.length);
      const start = Math.max(0, Math.min(cursor - Math.floor(size / 2), text.length - size));
      plans[id] = { trace, offset: at, window: text.slice(start, start + size), windowStart: start, txns };
    }
  });
  return plans;
}

const seconds = (iso) => Math.floor(Date.parse(iso) / 1000) || 0;

/**
 * Builds one note from its plan; returns `{bytes, changes, chars}` where `bytes` is
 * `A.save` output. Uses the low-level backend (same format as `A.change`, ~2x faster).
 */
export function buildNote(plan) {
  const { trace, offset, window, txns } = plan;
  const doc = A.getBackend(A.init()).fork();
  try {
    const text = doc.putObject("_root", "text", "");
    doc.splice(text, 0, 0, window);
    doc.commit(null, seconds(trace.txns[offset].time));
    let start = plan.windowStart;
    let len = window.length;
    let changes = 1;
    for (let t = offset; t < offset + txns; t++) {
      let touched = false;
      for (const [pos, del, ins] of trace.txns[t].patches) {
        if (pos < start && pos + del <= start) {
          start += ins.length - del; // edit entirely before the window: the window moves
          continue;
        }
        if (pos > start + len) continue; // entirely after the window
        const from = Math.max(pos, start);
        const removed = Math.max(0, Math.min(pos + del, start + len) - from);
        const local = from - start; // 0 for a delete straddling the window's start
        if (pos < start) start = pos; // ... whose insert then opens the window
        doc.splice(text, local, removed, ins);
        len += ins.length - removed;
        touched = true;
      }
      if (touched) {
        doc.commit(null, seconds(trace.txns[t].time));
        changes++;
      }
    }
    return { bytes: doc.save(), changes, chars: len };
  } finally {
    doc.free();
  }
}

/** A ~`size`-char starting text for the latency note: a seeded slice of a trace's end text. */
export function excerpt(trace, size, random) {
  const from = random.below(Math.max(1, trace.endContent.length - size));
  return trace.endContent.slice(from, from + size);
}
