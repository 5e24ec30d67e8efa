// Wiring for the window: holds the UI state (notes, selection, open note), loads
// data through `ipc`, renders through `notes`, and reacts to clicks, keys and the
// backend's `notes-changed` event. No DOM building and no command names here.

import "./style.css";
import { CommandError, getNote, listNotes, onNotesChanged, type NoteId, type NoteSummary } from "./ipc";
import { markSelected, refreshTimes, renderList, renderViewer, revealSelected, type ViewerState } from "./notes";

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`index.html is missing #${id}`);
  return el as T;
}

const listEl = byId<HTMLUListElement>("note-list");
const countEl = byId<HTMLSpanElement>("note-count");
const viewerEl = byId<HTMLElement>("viewer");

const state: {
  notes: NoteSummary[];
  selected: NoteId | null;
  viewer: ViewerState;
} = { notes: [], selected: null, viewer: { kind: "none-selected" } };

// Responses can arrive out of order when events come quickly; a request only
// renders if no newer request of the same kind started after it.
let listGeneration = 0;
let noteGeneration = 0;

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function drawList(): void {
  renderList(listEl, countEl, state.notes, state.selected, Date.now());
}

function drawViewer(): void {
  renderViewer(viewerEl, state.viewer, Date.now());
}

async function openNote(id: NoteId): Promise<void> {
  const generation = ++noteGeneration;
  try {
    const note = await getNote(id);
    if (generation !== noteGeneration) return;
    state.viewer = { kind: "note", note };
  } catch (err) {
    if (generation !== noteGeneration) return;
    const title = err instanceof CommandError && err.kind === "note_not_found" ? "Note not found" : "Could not open note";
    state.viewer = { kind: "error", title, message: message(err) };
  }
  drawViewer();
}

function select(id: NoteId): void {
  if (state.selected === id && state.viewer.kind === "note") return;
  state.selected = id;
  markSelected(listEl, id);
  revealSelected(listEl);
  void openNote(id);
}

/** Reloads the list; reloads the open note if `changed` is it (or unknown). */
async function refresh(changed: NoteId | null): Promise<void> {
  const generation = ++listGeneration;
  let notes: NoteSummary[];
  try {
    notes = await listNotes();
  } catch (err) {
    if (generation !== listGeneration) return;
    state.viewer = { kind: "error", title: "Could not load notes", message: message(err) };
    drawViewer();
    return;
  }
  if (generation !== listGeneration) return;
  state.notes = notes;

  const first = notes[0];
  if (first === undefined) {
    state.selected = null;
    state.viewer = { kind: "empty" };
    drawList();
    drawViewer();
    return;
  }
  drawList();
  if (state.selected === null || !notes.some((n) => n.id === state.selected)) {
    // Nothing chosen yet, or the open note went away: show the newest.
    select(first.id);
  } else if (changed === null || changed === state.selected) {
    void openNote(state.selected);
  }
}

// Several changes in quick succession (a sync burst) cost one refresh.
let pending: { timer: number; changed: NoteId | null } | null = null;
function scheduleRefresh(changed: NoteId | null): void {
  if (pending !== null) {
    window.clearTimeout(pending.timer);
    changed = pending.changed === changed ? changed : null;
  }
  const timer = window.setTimeout(() => {
    const id = pending?.changed ?? null;
    pending = null;
    void refresh(id);
  }, 50);
  pending = { timer, changed };
}

function moveSelection(delta: number): void {
  if (state.notes.length === 0) return;
  const at = state.notes.findIndex((n) => n.id === state.selected);
  const next = state.notes[Math.min(state.notes.length - 1, Math.max(0, at + delta))];
  if (next !== undefined) select(next.id);
}

listEl.addEventListener("click", (event) => {
  const item = (event.target as Element).closest<HTMLElement>(".note-item");
  const id = item?.dataset.noteId;
  if (id !== undefined) {
    listEl.focus({ preventScroll: true });
    select(id);
  }
});

listEl.addEventListener("keydown", (event) => {
  const moves: Record<string, number> = { ArrowDown: 1, ArrowUp: -1, PageDown: 10, PageUp: -10 };
  if (event.key === "Home") moveSelection(-Infinity);
  else if (event.key === "End") moveSelection(Infinity);
  else if (event.key in moves) moveSelection(moves[event.key] ?? 0);
  else return;
  event.preventDefault();
});

// Relative times ("5 min ago") age while the window stays open; only their text
// changes, so scroll position and text selection survive.
window.setInterval(() => refreshTimes(document, Date.now()), 30_000);

async function start(): Promise<void> {
  // Subscribe before the first load so no change falls between the two.
  try {
    await onNotesChanged((change) => scheduleRefresh(change.id));
  } catch (err) {
    console.error("could not subscribe to notes-changed:", err);
  }
  await refresh(null);
}

void start();
