// Wiring for the window: holds the state (spaces, the view the list shows, the
// list, search results, the open note), loads it through `ipc`, hands it to the
// modules that draw it (sidebar, notes, pane, statusbar, peers, pairing,
// switcher, toast) and routes the backend's events. Builds no DOM itself.

// First, so errors met while the rest loads are collected too.
import "./errors";
import "./style.css";
import { wireCloseButtons } from "./dialogs";
import { byId, errorText } from "./dom";
import {
  CommandError,
  createNote,
  createSpace,
  getNote,
  listNotes,
  listSpaces,
  onNotesChanged,
  onPairing,
  onPeersChanged,
  onPresence,
  onPresenceGone,
  onSpacesChanged,
  onStoreProblem,
  onRemovedFromSpace,
  onStoreRecovered,
  removeDevice,
  removeMember,
  setRole,
  restoreNote,
  trashNote,
  type Joined,
  type NoteId,
  type NoteSummary,
  type SearchHit,
  type SpaceId,
} from "./ipc";
import { installShortcuts, localiseShortcutTitles } from "./keys";
import { NetworkWatch } from "./network";
import { NoteList, type ListRow } from "./notes";
import { InviteDialog, JoinDialog } from "./pairing";
import { NotePane } from "./pane";
import { PeersPanel } from "./peers";
import { SearchBox } from "./search";
import { Sidebar, spaceLabel, type View } from "./sidebar";
import { StatusBar } from "./statusbar";
import { Switcher } from "./switcher";
import { holdDataDir } from "./takeover";
import { refreshTimes } from "./time";
import { Toast } from "./toast";

const state: {
  view: View;
  /** The notes of the current view, newest first. */
  notes: NoteSummary[];
  /** Search results, shown instead of `notes` while searching. */
  hits: SearchHit[] | null;
  /** The note the pane shows (or is loading). */
  openId: NoteId | null;
  /** A space just joined whose index has not arrived yet: keep its view. */
  joining: { id: SpaceId; name: string } | null;
} = { view: { kind: "all" }, notes: [], hits: null, openId: null, joining: null };

const listTitle = byId("list-title", HTMLHeadingElement);
const noteCount = byId("note-count", HTMLSpanElement);
const listError = byId("list-error", HTMLParagraphElement);
const listEl = byId("note-list", HTMLUListElement);

const toast = new Toast();
const network = new NetworkWatch();

const sidebar = new Sidebar({
  onView: (view) => setView(view),
  onCreateSpace: async (name) => {
    const space = await createSpace(name);
    await loadSpaces();
    setView({ kind: "space", id: space.id });
  },
  onInvite: () => {
    const view = state.view;
    if (view.kind === "space") invite.open(view.id, spaceName(view.id) ?? "this space");
  },
  onJoin: () => join.open(),
});

const list = new NoteList(listEl, {
  onSelect: (id, how) => void openNote(id, how),
  onActivate: () => pane.focusEditor(),
  onRestore: (id) => void restore(id, false),
});

const pane = new NotePane({
  onNewNote: () => void newNote(),
  onTrash: () => void trashOpenNote(),
  onRestore: (id) => void restore(id, false),
});

const search = new SearchBox(byId("search", HTMLInputElement), {
  onResults: (_query, hits) => {
    state.hits = [...hits];
    showListError(null);
    drawList();
  },
  onError: (query, message) => showListError(`Search for “${query}” failed: ${message}`),
  onCleared: () => {
    state.hits = null;
    showListError(null);
    drawList();
    if (state.openId !== null && list.has(state.openId)) list.select(state.openId);
  },
  onLeave: (how) => {
    const first = list.shown[0];
    if (first === undefined) return;
    if (how === "enter") {
      void openNote(first.id, "direct").then(() => pane.focusEditor());
    } else {
      listEl.focus();
      void openNote(first.id, "keyboard");
    }
  },
  onEscapeEmpty: () => listEl.focus(),
});

const statusBar = new StatusBar(() => peers.toggle());
const peers = new PeersPanel({
  onRemove: async (space, nodeId) => {
    await removeMember(space, nodeId);
    await network.refresh();
    scheduleRefresh();
  },
  onSetRole: async (space, nodeId, role) => {
    await setRole(space, nodeId, role);
    await network.refresh();
  },
  onRemoveDevice: async (nodeId) => {
    await removeDevice(nodeId);
    await network.refresh();
    scheduleRefresh();
  },
  onLinkDevice: () => invite.openLink(),
  spaceName: (space, fallback) => spaceName(space) ?? fallback,
  onToggle: (open) => {
    statusBar.setExpanded(open);
    if (open) void network.refresh();
  },
});
network.subscribe((status, error) => {
  statusBar.render(status, error, Date.now());
  peers.render(status, error);
});

const invite = new InviteDialog(() => {
  scheduleRefresh();
  void network.refresh();
});
const join = new JoinDialog((joined) => void onJoined(joined));
const switcher = new Switcher((id) => void openNote(id, "direct").then(() => pane.focusEditor()));

// ---- names ----

function spaceName(id: SpaceId | null): string | null {
  if (id === null) return null;
  const space = sidebar.space(id);
  if (space !== null) return spaceLabel(space);
  return state.joining?.id === id ? state.joining.name : null;
}

function viewTitle(view: View): string {
  switch (view.kind) {
    case "all":
      return "All notes";
    case "trash":
      return "Trash";
    case "space":
      return spaceName(view.id) ?? "Space";
  }
}

function plural(n: number, one: string): string {
  return `${n.toLocaleString()} ${n === 1 ? one : `${one}s`}`;
}

// ---- the list ----

function noteRow(note: NoteSummary): ListRow {
  return {
    id: note.id,
    title: note.title,
    snippet: note.snippet,
    marked: false,
    updatedAt: note.updated_at,
    updatedBy: note.updated_by,
    trashed: note.trashed,
  };
}

function hitRow(hit: SearchHit): ListRow {
  return { id: hit.id, title: hit.title, snippet: hit.snippet, marked: true, updatedAt: null, updatedBy: null, trashed: false };
}

function drawList(): void {
  if (state.hits !== null) {
    listTitle.textContent = "Search";
    noteCount.textContent = plural(state.hits.length, "result");
    list.setRows(state.hits.map(hitRow), `No note matches “${search.query}”`);
  } else {
    listTitle.textContent = viewTitle(state.view);
    noteCount.textContent = plural(state.notes.length, "note");
    list.setRows(state.notes.map(noteRow), state.view.kind === "trash" ? "The trash is empty" : "No notes yet");
  }
}

function showListError(message: string | null): void {
  listError.hidden = message === null;
  listError.textContent = message ?? "";
}

// Answers can arrive out of order when events come quickly; only the answer to
// the latest request of a kind is used.
/** The store problem the banner shows, until saving works again. */
let storeProblem: string | null = null;
let listGeneration = 0;
let spacesGeneration = 0;
let openGeneration = 0;

/** Reloads the current view's notes. After a view change (`"view"`) the open
 * note stays if listed, else the first opens; after a change (`"refresh"`) a
 * note that left the list gives way to its neighbour. */
async function loadNotes(reason: "view" | "refresh"): Promise<void> {
  const generation = ++listGeneration;
  const view = state.view;
  const before = state.openId === null ? -1 : state.notes.findIndex((n) => n.id === state.openId);
  let notes: NoteSummary[];
  try {
    notes = await listNotes(view.kind === "space" ? view.id : null, view.kind === "trash");
  } catch (err) {
    if (generation === listGeneration) showListError(`Could not load the notes: ${errorText(err)}`);
    return;
  }
  if (generation !== listGeneration) return;
  if (state.hits === null) showListError(null);
  state.notes = notes;
  if (state.hits === null) drawList();

  const open = state.openId === null ? undefined : notes.find((n) => n.id === state.openId);
  if (open !== undefined) {
    pane.update(open.id, open.updated_at, open.updated_by, open.trashed);
    if (state.hits === null) list.select(open.id, reason === "view");
    return;
  }
  // Searching: the list is the results; leave the pane alone.
  if (state.hits !== null) return;
  // Opened from elsewhere (switcher, search) and never in this list: keep it.
  if (reason === "refresh" && state.openId !== null && before < 0) return;
  const next = notes[reason === "view" ? 0 : Math.max(0, Math.min(before, notes.length - 1))];
  if (next === undefined) {
    await closeNote(view.kind === "trash" ? "trash-empty" : "no-notes");
    return;
  }
  await openNote(next.id, "auto");
}

async function loadSpaces(): Promise<void> {
  const generation = ++spacesGeneration;
  try {
    const spaces = await listSpaces();
    if (generation !== spacesGeneration) return;
    sidebar.setError(null);
    const joining = state.joining;
    if (joining !== null && spaces.some((s) => s.id === joining.id)) state.joining = null;
    sidebar.render(spaces, state.view);
    // Removed from the space being shown: fall back to all notes.
    const view = state.view;
    if (view.kind === "space" && !spaces.some((s) => s.id === view.id) && state.joining?.id !== view.id) {
      setView({ kind: "all" });
    } else if (state.hits === null) {
      listTitle.textContent = viewTitle(state.view);
    }
  } catch (err) {
    if (generation === spacesGeneration) sidebar.setError(`Could not load the spaces: ${errorText(err)}`);
  }
}

// A burst of changes (sync, typing) costs one reload, 200 ms after it starts;
// a change during a steady stream (someone typing) still shows within that.
let refreshTimer: number | null = null;
function scheduleRefresh(): void {
  if (refreshTimer !== null) return;
  refreshTimer = window.setTimeout(() => {
    refreshTimer = null;
    void loadNotes("refresh");
    void loadSpaces();
    search.rerun();
  }, 200);
}

function setView(view: View): void {
  state.view = view;
  search.clear();
  sidebar.render(sidebar.knownSpaces, view);
  listTitle.textContent = viewTitle(view);
  void loadNotes("view");
}

// ---- the open note ----

let keyboardTimer = 0;

/** Opens `id` in the pane and marks it in the list. Arrowing through the list
 * (`"keyboard"`) opens after a short pause, so each row passed costs nothing. */
async function openNote(id: NoteId, how: "pointer" | "keyboard" | "auto" | "direct"): Promise<void> {
  const alreadyOpen = state.openId === id && pane.noteId === id;
  state.openId = id;
  list.select(list.has(id) ? id : null, how !== "pointer");
  window.clearTimeout(keyboardTimer);
  // Choosing the note that is already open keeps it as it is: same editor,
  // cursor and scroll position.
  if (alreadyOpen) return;
  if (how === "keyboard") {
    keyboardTimer = window.setTimeout(() => void showNote(id), 120);
    return;
  }
  await showNote(id);
}

/** Shows the pane's empty state; an open still loading is dropped. */
async function closeNote(kind: "no-notes" | "trash-empty" | "none-selected"): Promise<void> {
  state.openId = null;
  openGeneration++;
  window.clearTimeout(keyboardTimer);
  list.select(null);
  await pane.showEmpty(kind);
}

async function showNote(id: NoteId): Promise<void> {
  const generation = ++openGeneration;
  try {
    const note = await getNote(id);
    if (generation !== openGeneration) return;
    pane.showError(null);
    await pane.open(note, spaceName(note.space));
  } catch (err) {
    if (generation !== openGeneration) return;
    pane.showError(
      err instanceof CommandError && err.kind === "note_not_found"
        ? "That note no longer exists on this device."
        : `Could not open the note: ${errorText(err)}`,
    );
  }
}

async function newNote(): Promise<void> {
  const space = state.view.kind === "space" ? state.view.id : null;
  if (state.view.kind === "trash") {
    state.view = { kind: "all" };
    sidebar.render(sidebar.knownSpaces, state.view);
  }
  search.clear();
  let created: NoteSummary;
  try {
    created = await createNote(space, "");
  } catch (err) {
    toast.show(`Could not create a note: ${errorText(err)}`);
    return;
  }
  state.openId = created.id;
  await loadNotes("refresh");
  await openNote(created.id, "direct");
  pane.focusEditor();
}

/** The row to show once `id` leaves the list: the next one, else the previous. */
function neighbourOf(id: NoteId): NoteId | null {
  const next = list.neighbour(id, 1);
  if (next !== null && next.id !== id) return next.id;
  const previous = list.neighbour(id, -1);
  return previous !== null && previous.id !== id ? previous.id : null;
}

async function trashOpenNote(): Promise<void> {
  // The selected note: when arrowing, it may not have finished opening yet.
  const id = state.openId ?? pane.noteId;
  if (id === null) return;
  if (state.view.kind === "trash") {
    toast.show("This note is already in the trash.");
    return;
  }
  const next = neighbourOf(id);
  try {
    await trashNote(id);
  } catch (err) {
    toast.show(`Could not move the note to the trash: ${errorText(err)}`);
    return;
  }
  toast.show("Moved to trash —", { label: "Undo", run: () => void restore(id, true) });
  if (next !== null) void openNote(next, "auto");
  else void closeNote(state.hits !== null ? "none-selected" : "no-notes");
  scheduleRefresh();
}

/** Takes `id` out of the trash; `reopen` (Undo) opens it again. */
async function restore(id: NoteId, reopen: boolean): Promise<void> {
  try {
    await restoreNote(id);
  } catch (err) {
    toast.show(`Could not restore the note: ${errorText(err)}`);
    return;
  }
  if (reopen) {
    if (state.view.kind === "trash") setView({ kind: "all" });
    await openNote(id, "direct");
  } else {
    toast.show("Note restored.");
  }
  scheduleRefresh();
}

// ---- spaces and pairing ----

async function onJoined(joined: Joined): Promise<void> {
  if (joined.linked) {
    toast.show("Linked: this is now one more of your devices. Your notes and spaces arrive as it syncs.");
    await loadSpaces();
    setView({ kind: "all" });
    void network.refresh();
    return;
  }
  state.joining = { id: joined.space, name: joined.space_name };
  await loadSpaces();
  setView({ kind: "space", id: joined.space });
  void network.refresh();
}

// ---- events and keys ----

async function subscribe(): Promise<void> {
  const subscriptions = await Promise.allSettled([
    onNotesChanged((change) => {
      const id = change.id ?? pane.noteId;
      if (id !== null) pane.noteChanged(id);
      scheduleRefresh();
      network.soon();
    }),
    onSpacesChanged(() => {
      scheduleRefresh();
      network.soon();
    }),
    onPeersChanged(() => void network.refresh()),
    onPairing((progress) => {
      if (invite.isOpen) invite.handle(progress);
      if (join.isRunning) join.handle(progress);
    }),
    onPresence((presence) => pane.showPresence(presence)),
    onPresenceGone((gone) => pane.removePresence(gone.peer)),
    onRemovedFromSpace((removed) => {
      toast.show(`You were removed from ${removed.space_name} by ${removed.by}. What you have of it stays here; it no longer syncs.`);
    }),
    onStoreProblem((problem) => {
      storeProblem = `Could not save to disk: ${problem.message}. Your edits are kept and saving is retried.`;
      pane.showError(storeProblem);
    }),
    onStoreRecovered(() => {
      if (storeProblem !== null) pane.clearError(storeProblem);
      storeProblem = null;
    }),
  ]);
  for (const s of subscriptions) {
    if (s.status === "rejected") console.error("could not subscribe to a backend event:", s.reason);
  }
}

installShortcuts({
  newNote: () => void newNote(),
  quickSwitcher: () => {
    const rows = [...(state.hits ?? []), ...state.notes];
    switcher.open(rows.map((r) => ({ id: r.id, title: r.title })));
  },
  focusSearch: () => search.focus(),
  trashOpenNote: () => void trashOpenNote(),
  escape: () => {
    if (peers.isOpen) {
      peers.close();
      return true;
    }
    // In the results list, Escape ends the search (in the box, search.ts does).
    if (state.hits !== null && document.activeElement === listEl) {
      search.clear();
      return true;
    }
    return false;
  },
  editorFocused: () => pane.editorFocused,
});

byId("new-note", HTMLButtonElement).addEventListener("click", () => void newNote());
wireCloseButtons(document);
localiseShortcutTitles(document);

// Relative times ("5 min ago") age while the window stays open; only their text
// changes, so scroll position, focus and text selection survive.
window.setInterval(() => refreshTimes(document, Date.now()), 30_000);

async function start(): Promise<void> {
  // A daemon holding the data dir hands it over first (the dialog says so).
  const tookOver = await holdDataDir();
  // Subscribe before the first load so no change falls between the two.
  await subscribe();
  network.start();
  await Promise.all([loadSpaces(), loadNotes("view")]);
  if (tookOver) toast.show("Took over from the daemon: sync continues in this window.");
}

void start();
