// The note editor: CodeMirror 6 (Markdown) bound to the window's own Automerge
// replica of the open note, which syncs with the backend's `Node` by Automerge's
// sync protocol over IPC. The window is just another peer: local keystrokes
// become Automerge changes at once and are pushed to the Node (which saves them
// within its group-commit window), and changes from other devices arrive as sync
// messages and are patched into CodeMirror without moving the local cursor.
//
// Opening a note shows the store's cached text at once, and the user can type
// in it straight away, while the document loads (a long history takes a while):
// those early edits are kept as splices against the cached text and, once the
// document has loaded, made as one change at the heads that text is of, so
// anything that arrived meanwhile merges with them. Then the editor is bound
// to the document. A cached text of unknown heads is shown read-only until the
// document has loaded. `data-state` on the parent says which ("loading"
// read-only, "early" typing before the load, "editable" bound to the
// document, "error"); `data-shown-ms`, `data-typable-ms` and
// `data-editable-ms` record how long each took from the click.
//
// CodeMirror injects its own stylesheet (a <style> element here), which is why
// the app's CSP allows inline styles; without them its layout rules, such as
// `white-space: pre` on the content, are dropped and editing goes wrong.

import * as A from "@automerge/automerge/slim";
import wasmUrl from "@automerge/automerge/automerge.wasm?url";
import { automergeSyncPlugin } from "@automerge/automerge-codemirror";
import { markdown } from "@codemirror/lang-markdown";
import { Compartment, EditorState, type Extension, RangeSetBuilder, StateEffect, StateField, Transaction } from "@codemirror/state";
import { Decoration, type DecorationSet, EditorView, WidgetType } from "@codemirror/view";
import { minimalSetup } from "codemirror";
import { closeNoteDoc, deviceId, loadNoteDoc, setPresence, syncNote, type NoteId, type NoteView, type Presence } from "./ipc";
import { EarlyEdits, recordEarlyEdits, withEarlyEdits } from "./early";

export interface EditorCallbacks {
  onError(message: string): void;
  onTitle(title: string): void;
}

/** What a note's document holds, as the UI uses it. */
interface NoteDoc {
  text: string;
}

type Listener = () => void;

/** The small handle `automergeSyncPlugin` needs, over one local document. */
class NoteHandle {
  private current: A.Doc<NoteDoc>;
  private readonly listeners = new Set<Listener>();

  constructor(
    doc: A.Doc<NoteDoc>,
    private readonly onLocalChange: () => void,
  ) {
    this.current = doc;
  }

  isReady(): boolean {
    return true;
  }

  doc(): A.Doc<NoteDoc> {
    return this.current;
  }

  /** A local edit (the plugin turns CodeMirror transactions into these). */
  change(callback: (doc: A.Doc<NoteDoc>) => void): void {
    this.current = A.change(this.current, callback);
    this.emit();
    this.onLocalChange();
  }

  /** The document after applying what a sync message brought. */
  replace(doc: A.Doc<NoteDoc>): void {
    this.current = doc;
    this.emit();
  }

  on(_event: "change", listener: Listener): void {
    this.listeners.add(listener);
  }

  off(_event: "change", listener: Listener): void {
    this.listeners.delete(listener);
  }

  private emit(): void {
    for (const listener of this.listeners) listener();
  }
}

/** One open note: its replica, its sync state and the sync loop. */
class OpenNote {
  readonly handle: NoteHandle;
  private syncState = A.initSyncState();
  private running: Promise<void> | null = null;
  private again = false;
  private failures = 0;
  private closed = false;

  constructor(
    readonly id: NoteId,
    doc: A.Doc<NoteDoc>,
    private readonly onError: (message: string) => void,
  ) {
    this.handle = new NoteHandle(doc, () => this.sync());
  }

  /** Runs sync rounds until neither side has anything to say. Calls made while
   * a round is in flight are folded into one more pass. */
  sync(): void {
    if (this.closed) return;
    if (this.running !== null) {
      this.again = true;
      return;
    }
    this.running = this.pump().finally(() => {
      this.running = null;
      if (this.again && !this.closed) {
        this.again = false;
        this.sync();
      }
    });
  }

  /** Waits for the sync in flight (if any) to finish. */
  async settle(): Promise<void> {
    while (this.running !== null) await this.running;
  }

  close(): void {
    this.closed = true;
  }

  private async pump(): Promise<void> {
    for (let round = 0; round < 1000; round++) {
      const [state, message] = A.generateSyncMessage(this.handle.doc(), this.syncState);
      this.syncState = state;
      let reply: Uint8Array | null;
      try {
        reply = await syncNote(this.id, message);
        this.failures = 0;
      } catch (err) {
        // Nothing is lost: the changes stay in this replica and the protocol
        // sends them again. Retry with a growing pause.
        this.failures += 1;
        this.onError(`Could not save to the store (retrying): ${err instanceof Error ? err.message : String(err)}`);
        const pause = Math.min(5000, 200 * 2 ** this.failures);
        this.syncState = A.decodeSyncState(A.encodeSyncState(this.syncState));
        window.setTimeout(() => this.sync(), pause);
        return;
      }
      if (reply !== null) {
        const [doc, state] = A.receiveSyncMessage(this.handle.doc(), this.syncState, reply);
        this.syncState = state;
        this.handle.replace(doc);
      }
      if (message === null && reply === null) return;
    }
  }
}

// ---- remote cursors ----

const setCursors = StateEffect.define<Presence[]>();

class CursorWidget extends WidgetType {
  constructor(
    private readonly name: string,
    private readonly color: string,
  ) {
    super();
  }

  override eq(other: CursorWidget): boolean {
    return other.name === this.name && other.color === this.color;
  }

  toDOM(): HTMLElement {
    const caret = document.createElement("span");
    caret.className = "remote-cursor";
    caret.style.borderLeftColor = this.color;
    const label = document.createElement("span");
    label.className = "remote-cursor-name";
    label.style.backgroundColor = this.color;
    label.textContent = this.name;
    caret.append(label);
    return caret;
  }
}

const remoteCursors = StateField.define<DecorationSet>({
  create: () => Decoration.none,
  update(cursors, tr) {
    let next = cursors.map(tr.changes);
    for (const effect of tr.effects) {
      if (!effect.is(setCursors)) continue;
      const length = tr.state.doc.length;
      const marks: { from: number; to: number; deco: Decoration }[] = [];
      for (const p of effect.value) {
        const head = Math.min(p.head, length);
        const anchor = Math.min(p.anchor, length);
        const [from, to] = head < anchor ? [head, anchor] : [anchor, head];
        if (from < to) {
          marks.push({ from, to, deco: Decoration.mark({ class: "remote-selection", attributes: { style: `background-color: color-mix(in srgb, ${p.color} 20%, transparent)` } }) });
        }
        marks.push({ from: head, to: head, deco: Decoration.widget({ widget: new CursorWidget(p.name, p.color), side: 1 }) });
      }
      marks.sort((a, b) => a.from - b.from || a.to - b.to);
      const builder = new RangeSetBuilder<Decoration>();
      for (const m of marks) builder.add(m.from, m.to, m.deco);
      next = builder.finish();
    }
    return next;
  },
  provide: (field) => EditorView.decorations.from(field),
});

// ---- the editor ----

let engine: Promise<void> | null = null;
/** Automerge's WebAssembly, loaded once, on first use (the app's CSP allows
 * fetching it from the app itself and compiling it: `wasm-unsafe-eval`). */
function automergeReady(): Promise<void> {
  engine ??= A.initializeWasm(wasmUrl);
  return engine;
}

let device: Promise<string> | null = null;
/** A fresh actor id for each load: this device's node id, a role byte for the
 * window, and random bytes, so no two replicas ever share an actor. */
async function windowActor(): Promise<string> {
  device ??= deviceId();
  const random = crypto.getRandomValues(new Uint8Array(8));
  return `${await device}01${Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

const theme = EditorView.theme({
  "&": { height: "100%", fontSize: "15px", backgroundColor: "transparent", color: "inherit" },
  ".cm-scroller": { fontFamily: "inherit", lineHeight: "1.6", overflow: "auto" },
  ".cm-content": { padding: "16px 0", caretColor: "currentColor" },
  ".cm-gutters": { display: "none" },
  "&.cm-focused": { outline: "none" },
  ".cm-activeLine": { backgroundColor: "transparent" },
});

/** Resolves once the next frame has been drawn. */
function nextFrame(): Promise<void> {
  return new Promise((resolve) => requestAnimationFrame(() => window.setTimeout(resolve, 0)));
}

/** Loads a note's document into a fresh replica of the window's own. */
async function loadDocument(id: NoteId): Promise<A.Doc<NoteDoc>> {
  await automergeReady();
  const [bytes, actor] = await Promise.all([loadNoteDoc(id), windowActor()]);
  return A.load<NoteDoc>(bytes, { actor: actor as A.ActorId });
}

/** The one replacement that turns `a` into `b`: what lies between their
 * common start and common end. */
function difference(a: string, b: string): { from: number; to: number; insert: string } {
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let end = 0;
  while (end < a.length - start && end < b.length - start && a[a.length - 1 - end] === b[b.length - 1 - end]) end++;
  return { from: start, to: a.length - end, insert: b.slice(start, b.length - end) };
}

export class NoteEditor {
  private view: EditorView | null = null;
  private open_: OpenNote | null = null;
  private opening: NoteId | null = null;
  private presence = new Map<string, Presence>();
  private lastTitle = "";
  private presenceTimer: number | null = null;
  /** The note whose document is loading, and what was typed in it meanwhile. */
  private loading: { id: NoteId; early: EarlyEdits | null; loaded: Promise<A.Doc<NoteDoc>> } | null = null;
  /** What binds the editor: early-edit recording (or read-only) until the
   * document has loaded, then the sync plugin. */
  private readonly binding = new Compartment();

  constructor(
    private readonly parent: HTMLElement,
    private readonly callbacks: EditorCallbacks,
  ) {
    // For tests and automation: the whole text (CodeMirror renders only the
    // visible lines), moving the selection, and inserting text as one editor
    // transaction (a newline typed with Enter would continue Markdown lists).
    Object.defineProperty(parent, "editorText", { value: () => this.view?.state.doc.toString() ?? null });
    Object.defineProperty(parent, "editorSelect", {
      value: (anchor: number, head: number) => {
        this.view?.focus();
        this.view?.dispatch({ selection: { anchor, head } });
      },
    });
    Object.defineProperty(parent, "editorInsert", {
      value: (text: string) => {
        const view = this.view;
        if (view === null) return;
        view.dispatch(view.state.replaceSelection(text), { userEvent: "input.type" });
      },
    });
  }

  get noteId(): NoteId | null {
    return this.opening;
  }

  /** Shows note.text at once (typable if its heads are known), then loads
   * the document, makes the early edits on it and binds the editor to it. */
  async open(note: NoteView): Promise<void> {
    const started = performance.now();
    await this.close();
    this.opening = note.id;
    this.lastTitle = note.title;
    this.parent.dataset.noteId = note.id;
    delete this.parent.dataset.typableMs;
    delete this.parent.dataset.editableMs;
    const early = note.heads.length > 0 ? new EarlyEdits(note.heads) : null;
    const before = early === null ? [EditorState.readOnly.of(true), EditorView.editable.of(false)] : recordEarlyEdits(early);
    this.mount([this.binding.of(before), this.listeners(note.id)], note.text);
    this.parent.dataset.shownMs = String(Math.round(performance.now() - started));
    this.parent.dataset.state = early === null ? "loading" : "early";
    if (early !== null) this.parent.dataset.typableMs = this.parent.dataset.shownMs;

    // Let the text paint before the load starts: a long history keeps both
    // the backend and this page busy, and the first frame would wait for it.
    const loaded = nextFrame().then(() => loadDocument(note.id));
    this.loading = { id: note.id, early, loaded };
    let doc: A.Doc<NoteDoc>;
    try {
      doc = await loaded;
    } catch (err) {
      if (this.opening !== note.id) return;
      this.loading = null;
      this.parent.dataset.state = "error";
      this.view?.dispatch({ effects: this.binding.reconfigure([EditorState.readOnly.of(true), EditorView.editable.of(false)]) });
      const lost = early !== null && early.edits.length > 0 ? " What was typed since it opened is not saved: copy it before leaving the note." : "";
      this.callbacks.onError(`This note cannot be edited: ${err instanceof Error ? err.message : String(err)}.${lost}`);
      return;
    }
    // If the note was closed meanwhile, close() made the early edits.
    if (this.opening !== note.id || this.view === null) return;
    this.loading = null;
    doc = withEarlyEdits(doc, early, this.view.state.doc.toString());
    const open = new OpenNote(note.id, doc, (message) => this.callbacks.onError(message));
    this.open_ = open;
    this.bind(open, doc.text);
    this.parent.dataset.state = "editable";
    this.parent.dataset.editableMs = String(Math.round(performance.now() - started));
    this.drawPresence();
    open.sync();
  }

  /** Binds the editor to the loaded document: first makes the editor's text
   * the document's (they differ only if changes arrived during the load), then
   * lets the sync plugin take over. Focus, selection, scroll and undo history
   * are kept. */
  private bind(open: OpenNote, text: string): void {
    const view = this.view;
    if (view === null) return;
    const current = view.state.doc.toString();
    const changes = current === text ? [] : [difference(current, text)];
    view.dispatch({ changes, annotations: Transaction.addToHistory.of(false), effects: this.binding.reconfigure([]) });
    view.dispatch({ effects: this.binding.reconfigure(automergeSyncPlugin({ handle: open.handle, path: ["text"] })) });
  }

  /** Pushes what is left to the store, then lets the note go. Edits typed
   * before the document loaded are made on it once it has, and pushed too. */
  async close(): Promise<void> {
    const open = this.open_;
    const loading = this.loading;
    const typed = this.view?.state.doc.toString() ?? "";
    this.open_ = null;
    this.loading = null;
    this.opening = null;
    this.view?.destroy();
    this.view = null;
    this.parent.replaceChildren();
    delete this.parent.dataset.noteId;
    this.parent.dataset.state = "empty";
    if (open !== null) await this.release(open);
    if (loading !== null && loading.early !== null && loading.early.edits.length > 0) {
      try {
        const doc = withEarlyEdits(await loading.loaded, loading.early, typed);
        const late = new OpenNote(loading.id, doc, (message) => this.callbacks.onError(message));
        late.sync();
        await this.release(late);
      } catch (err) {
        this.callbacks.onError(`What was typed before the note loaded could not be saved: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }

  /** Waits for a note's last sync, then tells the backend the window let it go. */
  private async release(open: OpenNote): Promise<void> {
    await open.settle();
    open.close();
    await closeNoteDoc(open.id).catch(() => undefined);
  }

  focus(): void {
    this.view?.focus();
  }

  /** The backend says this note changed: pull the changes. */
  noteChanged(id: NoteId): void {
    if (this.open_?.id === id) this.open_.sync();
  }

  showPresence(p: Presence): void {
    this.presence.set(p.peer, p);
    this.drawPresence();
  }

  removePresence(peer: string): void {
    if (this.presence.delete(peer)) this.drawPresence();
  }

  private mount(extensions: Extension[], text: string): void {
    this.view?.destroy();
    const state = EditorState.create({
      doc: text,
      extensions: [minimalSetup, markdown(), EditorView.lineWrapping, theme, remoteCursors, ...extensions],
    });
    this.view = new EditorView({ state, parent: this.parent });
  }

  private listeners(id: NoteId): Extension {
    return EditorView.updateListener.of((update) => {
      if (update.docChanged) {
        const title = firstLine(update.state.doc.toString());
        if (title !== this.lastTitle) {
          this.lastTitle = title;
          this.callbacks.onTitle(title);
        }
      }
      if (update.selectionSet || update.docChanged) this.sharePresence(id);
    });
  }

  /** Tells peers where the cursor is, at most every 100 ms. */
  private sharePresence(id: NoteId): void {
    if (this.presenceTimer !== null) return;
    this.presenceTimer = window.setTimeout(() => {
      this.presenceTimer = null;
      const main = this.view?.state.selection.main;
      if (main === undefined || this.open_?.id !== id) return;
      setPresence(id, main.anchor, main.head).catch(() => undefined);
    }, 100);
  }

  private drawPresence(): void {
    const id = this.open_?.id;
    if (this.view === null || id === undefined) return;
    const here = [...this.presence.values()].filter((p) => p.note === id);
    this.view.dispatch({ effects: setCursors.of(here) });
  }
}

function firstLine(text: string): string {
  for (const line of text.split("\n")) {
    const trimmed = line.trim();
    if (trimmed !== "") return trimmed.replace(/^#+\s*/, "");
  }
  return "";
}
