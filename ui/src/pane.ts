// The editor pane (right column): the open note's header (title, space, "edited
// 5 min ago"), the trash banner, the non-blocking error banner, the empty state,
// and the `NoteEditor` living in `#editor`. Which note to open is main.ts's
// choice; this module only shows it.

import { byId } from "./dom";
import type { NoteId, NoteView, Presence } from "./ipc";
import { NoteEditor } from "./editor";
import { displayTitle } from "./notes";
import { setTime } from "./time";

export interface PaneEvents {
  onNewNote(): void;
  onTrash(): void;
  onRestore(id: NoteId): void;
}

export class NotePane {
  private readonly header = byId("note-header", HTMLElement);
  private readonly title = byId("note-title", HTMLHeadingElement);
  private readonly space = byId("note-space", HTMLSpanElement);
  private readonly edited = byId("note-edited", HTMLTimeElement);
  private readonly by = byId("note-by", HTMLSpanElement);
  private readonly trashBanner = byId("trash-banner", HTMLDivElement);
  private readonly trashButton = byId("trash-note", HTMLButtonElement);
  private readonly errorBanner = byId("editor-error", HTMLDivElement);
  private readonly errorText = byId("editor-error-text", HTMLSpanElement);
  private readonly editorEl = byId("editor", HTMLDivElement);
  private readonly empty = byId("empty-state", HTMLDivElement);
  private readonly emptyTitle = byId("empty-title", HTMLHeadingElement);
  private readonly emptyText = byId("empty-text", HTMLParagraphElement);
  private readonly emptyButton = byId("empty-new-note", HTMLButtonElement);
  private readonly editor: NoteEditor;
  /** The note shown in the header (set before its document has loaded). */
  private shown: NoteView | null = null;

  constructor(events: PaneEvents) {
    this.editor = new NoteEditor(this.editorEl, {
      onError: (message) => this.showError(message),
      onTitle: (title) => this.setTitle(title),
    });
    this.emptyButton.addEventListener("click", () => events.onNewNote());
    this.trashButton.addEventListener("click", () => events.onTrash());
    byId("restore-note", HTMLButtonElement).addEventListener("click", () => {
      if (this.shown !== null) events.onRestore(this.shown.id);
    });
    byId("editor-error-close", HTMLButtonElement).addEventListener("click", () => this.showError(null));
  }

  /** The note open in the editor, or (while it loads) the one about to be. */
  get noteId(): NoteId | null {
    return this.editor.noteId ?? this.shown?.id ?? null;
  }

  /** Shows `note` at once and opens it in the editor. */
  async open(note: NoteView, spaceName: string | null): Promise<void> {
    this.shown = note;
    this.empty.hidden = true;
    this.header.hidden = false;
    this.editorEl.hidden = false;
    this.setTitle(note.title);
    this.space.textContent = spaceName ?? "";
    this.space.hidden = spaceName === null;
    setTime(this.edited, note.updated_at, Date.now(), "edited ");
    this.by.textContent = "";
    this.showTrashed(note.trashed);
    try {
      await this.editor.open(note);
    } catch (err) {
      if (this.shown?.id === note.id) this.showError(`Could not open “${displayTitle(note.title)}”: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /** Fresher facts about the open note from a list refresh. */
  update(id: NoteId, updatedAt: number, updatedBy: string | null, trashed: boolean): void {
    if (this.shown?.id !== id) return;
    setTime(this.edited, updatedAt, Date.now(), "edited ");
    this.by.textContent = updatedBy === null ? "" : `by ${updatedBy}`;
    this.showTrashed(trashed);
  }

  /** Closes the editor and shows the empty state: nothing here, or nothing chosen. */
  async showEmpty(kind: "no-notes" | "trash-empty" | "none-selected"): Promise<void> {
    this.shown = null;
    this.header.hidden = true;
    this.trashBanner.hidden = true;
    this.editorEl.hidden = true;
    this.empty.hidden = false;
    const texts = {
      "no-notes": ["No notes here yet", "Write the first one, or join a space to see its notes.", true],
      "trash-empty": ["The trash is empty", "Notes you delete wait here until you restore them.", false],
      "none-selected": ["No note open", "Pick a note in the list, or press Ctrl+P to find one.", true],
    } as const;
    const [heading, text, button] = texts[kind];
    this.emptyTitle.textContent = heading;
    this.emptyText.textContent = text;
    this.emptyButton.hidden = !button;
    document.title = "Peernotes";
    try {
      await this.editor.close();
    } catch (err) {
      this.showError(err instanceof Error ? err.message : String(err));
    }
  }

  /** Shows (or, with null, hides) a non-blocking problem above the editor. */
  showError(message: string | null): void {
    this.errorBanner.hidden = message === null;
    this.errorText.textContent = message ?? "";
  }

  /** Hides the banner if it still shows `message` (and not a newer problem). */
  clearError(message: string): void {
    if (!this.errorBanner.hidden && this.errorText.textContent === message) this.showError(null);
  }

  focusEditor(): void {
    if (!this.editorEl.hidden) this.editor.focus();
  }

  /** Focus is somewhere inside the editor. */
  get editorFocused(): boolean {
    return this.editorEl.contains(document.activeElement);
  }

  noteChanged(id: NoteId): void {
    this.editor.noteChanged(id);
  }

  showPresence(p: Presence): void {
    this.editor.showPresence(p);
  }

  removePresence(peer: string): void {
    this.editor.removePresence(peer);
  }

  /** A trashed note offers Restore instead of Move to trash. */
  private showTrashed(trashed: boolean): void {
    this.trashBanner.hidden = !trashed;
    this.trashButton.hidden = trashed;
  }

  private setTitle(title: string): void {
    this.title.textContent = displayTitle(title);
    this.title.classList.toggle("untitled", title.trim() === "");
    document.title = `${displayTitle(title)} — Peernotes`;
  }
}
