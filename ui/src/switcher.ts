// The quick switcher (Ctrl+P): a small modal `#switcher` that filters the titles
// it is given (the current list and the latest search results) as you type;
// arrows move, Enter opens, Escape closes. Ranking is plain and predictable:
// titles starting with the query, then containing it at a word start, then
// anywhere, then with its letters in order.

import { byId, h } from "./dom";
import type { NoteId } from "./ipc";
import { displayTitle } from "./notes";

export interface SwitcherItem {
  id: NoteId;
  title: string;
}

const SHOWN = 50;

/** 0 (best) to 3, or null if `title` does not match `query` (lower case) at all. */
export function matchRank(title: string, query: string): number | null {
  if (query === "") return 0;
  const t = title.toLowerCase();
  const at = t.indexOf(query);
  if (at === 0) return 0;
  if (at > 0) return /[\s\p{P}]/u.test(t[at - 1] ?? "") ? 1 : 2;
  let i = 0;
  for (const ch of t) if (ch === query[i]) i++;
  return i === query.length ? 3 : null;
}

export class Switcher {
  private readonly dialog = byId("switcher", HTMLDialogElement);
  private readonly input = byId("switcher-input", HTMLInputElement);
  private readonly list = byId("switcher-list", HTMLUListElement);
  private items: readonly SwitcherItem[] = [];
  private matches: SwitcherItem[] = [];
  private active = 0;

  constructor(private readonly onOpen: (id: NoteId) => void) {
    this.input.addEventListener("input", () => this.filter());
    this.input.addEventListener("keydown", (event) => this.onKey(event));
    this.list.addEventListener("mousedown", (event) => event.preventDefault());
    this.list.addEventListener("click", (event) => {
      const id = (event.target as Element).closest<HTMLElement>(".switcher-item")?.dataset.noteId;
      if (id !== undefined) this.choose(id);
    });
    this.dialog.addEventListener("click", (event) => {
      if (event.target === this.dialog) this.dialog.close();
    });
  }

  get isOpen(): boolean {
    return this.dialog.open;
  }

  open(items: readonly SwitcherItem[]): void {
    const seen = new Set<NoteId>();
    this.items = items.filter((item) => !seen.has(item.id) && seen.add(item.id));
    this.input.value = "";
    if (!this.dialog.open) this.dialog.showModal();
    this.filter();
    this.input.focus();
  }

  private filter(): void {
    const query = this.input.value.trim().toLowerCase();
    const ranked: { item: SwitcherItem; rank: number; order: number }[] = [];
    this.items.forEach((item, order) => {
      const rank = matchRank(displayTitle(item.title), query);
      if (rank !== null) ranked.push({ item, rank, order });
    });
    ranked.sort((a, b) => a.rank - b.rank || a.order - b.order);
    this.matches = ranked.slice(0, SHOWN).map((r) => r.item);
    this.active = 0;
    this.draw();
  }

  private draw(): void {
    if (this.matches.length === 0) {
      this.list.replaceChildren(h("li", { class: "switcher-empty", attrs: { role: "none" } }, "No matching note"));
      this.input.removeAttribute("aria-activedescendant");
      return;
    }
    this.list.replaceChildren(
      ...this.matches.map((item, i) =>
        h(
          "li",
          {
            id: `switcher-item-${i}`,
            class: item.title.trim() === "" ? "switcher-item untitled" : "switcher-item",
            attrs: { role: "option", "data-note-id": item.id, "aria-selected": String(i === this.active) },
          },
          displayTitle(item.title),
        ),
      ),
    );
    this.input.setAttribute("aria-activedescendant", `switcher-item-${this.active}`);
  }

  private onKey(event: KeyboardEvent): void {
    const last = this.matches.length - 1;
    let next = this.active;
    if (event.key === "ArrowDown") next = Math.min(last, this.active + 1);
    else if (event.key === "ArrowUp") next = Math.max(0, this.active - 1);
    else if (event.key === "Enter") {
      event.preventDefault();
      const item = this.matches[this.active];
      if (item !== undefined) this.choose(item.id);
      return;
    } else return;
    event.preventDefault();
    if (next === this.active || last < 0) return;
    this.list.querySelector(`#switcher-item-${this.active}`)?.setAttribute("aria-selected", "false");
    this.active = next;
    const li = this.list.querySelector(`#switcher-item-${next}`);
    li?.setAttribute("aria-selected", "true");
    li?.scrollIntoView({ block: "nearest" });
    this.input.setAttribute("aria-activedescendant", `switcher-item-${next}`);
  }

  private choose(id: NoteId): void {
    this.dialog.close();
    this.onOpen(id);
  }
}
