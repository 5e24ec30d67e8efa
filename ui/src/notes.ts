// The note list (middle column): a listbox that stays fast with 10,000 notes by
// rendering only the rows in view (fixed row height, absolutely placed rows over
// one spacer that gives the list its full height). Owns the selection mark,
// keyboard movement and scrolling the selection into view; what a selection
// *does* is the caller's (`NoteListEvents`). Text is always set as text, never
// parsed as HTML, because titles and snippets come from other devices.

import { h } from "./dom";
import type { NoteId } from "./ipc";
import { timeElement } from "./time";

/** One row: a note of a space, a trashed note, or a search hit. */
export interface ListRow {
  id: NoteId;
  title: string;
  snippet: string;
  /** The snippet marks matches with `[` and `]` (a search hit). */
  marked: boolean;
  /** Unix milliseconds of the last edit, if known. */
  updatedAt: number | null;
  /** Who made the last edit ("Alice", "you"), if known. */
  updatedBy: string | null;
  trashed: boolean;
}

export interface NoteListEvents {
  /** The selection moved to `id`; `how` says whether the user is arrowing through. */
  onSelect(id: NoteId, how: "pointer" | "keyboard"): void;
  /** Enter on the selected row. */
  onActivate(id: NoteId): void;
  /** The row's Restore button (trash rows). */
  onRestore(id: NoteId): void;
}

/** Height of one row in CSS pixels; `.note-item` in style.css must fit it. */
export const ROW_HEIGHT = 64;
/** Space above the first row and below the last. */
const PAD = 6;
/** Rows rendered beyond each edge of the view, so fast scrolling shows no gaps. */
const OVERSCAN = 6;

/** A title to show for a note whose first line is blank. */
export function displayTitle(title: string): string {
  return title.trim() === "" ? "Untitled" : title;
}

/** `snippet` with every `[match]` as a `<mark>`; a bracket that does not pair
 * up is kept as text. */
export function markedSnippet(snippet: string): (string | HTMLElement)[] {
  const parts: (string | HTMLElement)[] = [];
  let at = 0;
  while (at < snippet.length) {
    const open = snippet.indexOf("[", at);
    const close = open < 0 ? -1 : snippet.indexOf("]", open + 1);
    if (open < 0 || close < 0) {
      parts.push(snippet.slice(at));
      break;
    }
    if (open > at) parts.push(snippet.slice(at, open));
    parts.push(h("mark", {}, snippet.slice(open + 1, close)));
    at = close + 1;
  }
  return parts;
}

function rowElement(row: ListRow, position: number, total: number, selected: boolean, now: number): HTMLLIElement {
  const title = h("span", { class: row.title.trim() === "" ? "note-title untitled" : "note-title" }, displayTitle(row.title));
  const snippet = h("span", { class: "note-snippet" }, ...(row.marked ? markedSnippet(row.snippet) : [row.snippet]));
  const li = h(
    "li",
    {
      id: `note-item-${row.id}`,
      class: row.marked ? "note-item search-hit" : "note-item",
      attrs: {
        role: "option",
        "data-note-id": row.id,
        "aria-selected": String(selected),
        "aria-posinset": String(position + 1),
        "aria-setsize": String(total),
      },
    },
    title,
    snippet,
  );
  if (!row.marked) {
    const meta = h("div", { class: "note-item-meta" });
    if (row.updatedAt !== null) meta.append(timeElement(row.updatedAt, now, "note-time"));
    if (row.updatedBy !== null) meta.append(h("span", { class: "note-by" }, `by ${row.updatedBy}`));
    if (row.trashed) {
      const restore = h("button", { class: "restore-button", title: "Restore this note", attrs: { type: "button", tabindex: "-1" } }, "Restore");
      meta.append(restore);
    }
    li.append(meta);
  }
  li.style.top = `${PAD + position * ROW_HEIGHT}px`;
  return li;
}

export class NoteList {
  private rows: readonly ListRow[] = [];
  private positions = new Map<NoteId, number>();
  private selectedId: NoteId | null = null;
  /** The rows in the DOM now, by note id. */
  private rendered = new Map<NoteId, HTMLLIElement>();
  private renderedRange = { first: 0, last: 0 };
  private readonly spacer: HTMLLIElement;
  private readonly empty: HTMLLIElement;
  private frame = 0;

  constructor(
    private readonly list: HTMLUListElement,
    private readonly events: NoteListEvents,
  ) {
    this.spacer = h("li", { class: "note-list-spacer", attrs: { role: "none", "aria-hidden": "true" } });
    this.empty = h("li", { class: "note-list-empty", attrs: { role: "none" } });
    list.replaceChildren(this.spacer);
    list.addEventListener("scroll", () => this.schedule(), { passive: true });
    new ResizeObserver(() => this.schedule()).observe(list);
    list.addEventListener("click", (event) => this.onClick(event));
    list.addEventListener("keydown", (event) => this.onKey(event));
  }

  /** Replaces the rows; keeps the scroll position and, if it is still listed, the selection. */
  setRows(rows: readonly ListRow[], emptyText: string): void {
    this.rows = rows;
    this.positions = new Map(rows.map((r, i) => [r.id, i]));
    this.empty.textContent = emptyText;
    this.rendered.clear();
    this.renderedRange = { first: 0, last: 0 };
    this.spacer.style.height = `${rows.length === 0 ? 0 : rows.length * ROW_HEIGHT + 2 * PAD}px`;
    if (rows.length === 0) {
      this.list.replaceChildren(this.spacer, this.empty);
      this.list.removeAttribute("aria-activedescendant");
      return;
    }
    this.render(true);
  }

  /** The rows shown now, in order. */
  get shown(): readonly ListRow[] {
    return this.rows;
  }

  get selected(): NoteId | null {
    return this.selectedId;
  }

  /** The row `offset` places after (or before) `id`, clamped to the list. */
  neighbour(id: NoteId, offset: number): ListRow | null {
    const at = this.positions.get(id);
    if (at === undefined) return null;
    return this.rows[Math.min(this.rows.length - 1, Math.max(0, at + offset))] ?? null;
  }

  has(id: NoteId): boolean {
    return this.positions.has(id);
  }

  /** Marks `id` selected (null: none) and scrolls it into view if `reveal`. */
  select(id: NoteId | null, reveal = true): void {
    const previous = this.selectedId === null ? undefined : this.rendered.get(this.selectedId);
    previous?.setAttribute("aria-selected", "false");
    this.selectedId = id;
    if (id !== null && reveal) this.reveal(id);
    const current = id === null ? undefined : this.rendered.get(id);
    current?.setAttribute("aria-selected", "true");
    if (current !== undefined) this.list.setAttribute("aria-activedescendant", current.id);
    else this.list.removeAttribute("aria-activedescendant");
  }

  /** Scrolls so the row of `id` is in full view, rendering the rows it brings. */
  private reveal(id: NoteId): void {
    const at = this.positions.get(id);
    if (at === undefined) return;
    const top = PAD + at * ROW_HEIGHT;
    const bottom = top + ROW_HEIGHT;
    const view = this.list.clientHeight;
    if (top - PAD < this.list.scrollTop) this.list.scrollTop = top - PAD;
    else if (bottom + PAD > this.list.scrollTop + view) this.list.scrollTop = bottom + PAD - view;
    this.render(false);
  }

  private schedule(): void {
    if (this.frame !== 0) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render(false);
    });
  }

  /** Puts the rows in view (plus overscan) into the DOM; `force` rebuilds them all. */
  private render(force: boolean): void {
    if (this.rows.length === 0) return;
    const view = this.list.clientHeight || ROW_HEIGHT * 20;
    const top = Math.max(0, this.list.scrollTop - PAD);
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(this.rows.length, Math.ceil((top + view) / ROW_HEIGHT) + OVERSCAN);
    if (!force && first === this.renderedRange.first && last === this.renderedRange.last) return;

    const now = Date.now();
    const next = new Map<NoteId, HTMLLIElement>();
    const ordered: HTMLLIElement[] = [];
    for (let i = first; i < last; i++) {
      const row = this.rows[i];
      if (row === undefined) continue;
      const li = this.rendered.get(row.id) ?? rowElement(row, i, this.rows.length, row.id === this.selectedId, now);
      next.set(row.id, li);
      ordered.push(li);
    }
    this.rendered = next;
    this.renderedRange = { first, last };
    // DOM order follows list order, so assistive tech reads rows in sequence.
    this.list.replaceChildren(this.spacer, ...ordered);
    const current = this.selectedId === null ? undefined : next.get(this.selectedId);
    if (current !== undefined) this.list.setAttribute("aria-activedescendant", current.id);
    else this.list.removeAttribute("aria-activedescendant");
  }

  private onClick(event: MouseEvent): void {
    const target = event.target as Element;
    const item = target.closest<HTMLElement>(".note-item");
    const id = item?.dataset.noteId;
    if (id === undefined) return;
    if (target.closest(".restore-button") !== null) {
      this.events.onRestore(id);
      return;
    }
    this.list.focus({ preventScroll: true });
    this.select(id);
    this.events.onSelect(id, "pointer");
  }

  private onKey(event: KeyboardEvent): void {
    if (event.altKey || event.ctrlKey || event.metaKey || this.rows.length === 0) return;
    const page = Math.max(1, Math.floor(this.list.clientHeight / ROW_HEIGHT) - 1);
    const at = this.selectedId === null ? -1 : (this.positions.get(this.selectedId) ?? -1);
    let to: number;
    switch (event.key) {
      case "ArrowDown":
        to = at + 1;
        break;
      case "ArrowUp":
        to = at < 0 ? 0 : at - 1;
        break;
      case "PageDown":
        to = at + page;
        break;
      case "PageUp":
        to = at - page;
        break;
      case "Home":
        to = 0;
        break;
      case "End":
        to = this.rows.length - 1;
        break;
      case "Enter":
        if (this.selectedId !== null) this.events.onActivate(this.selectedId);
        event.preventDefault();
        return;
      default:
        return;
    }
    event.preventDefault();
    const row = this.rows[Math.min(this.rows.length - 1, Math.max(0, to))];
    if (row === undefined || row.id === this.selectedId) return;
    this.select(row.id);
    this.events.onSelect(row.id, "keyboard");
  }
}
