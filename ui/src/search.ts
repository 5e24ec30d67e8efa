// The search box above the note list (`#search`): runs `searchNotes` about
// 150 ms after typing stops and hands the hits on; an answer to an older query
// is dropped. Escape clears (a second Escape leaves the box), ArrowDown moves
// into the list, Enter opens the first hit.

import { errorText } from "./dom";
import { searchNotes, type SearchHit } from "./ipc";

const DEBOUNCE_MS = 150;

export interface SearchEvents {
  /** Results for `query` (the box's trimmed text). */
  onResults(query: string, hits: readonly SearchHit[]): void;
  /** The search failed; the list keeps what it had. */
  onError(query: string, message: string): void;
  /** The box is empty again: show the list. */
  onCleared(): void;
  /** ArrowDown or Enter: go into the results. */
  onLeave(how: "arrow" | "enter"): void;
  /** Escape on an empty box. */
  onEscapeEmpty(): void;
}

export class SearchBox {
  private timer = 0;
  private generation = 0;
  private current = "";

  constructor(
    private readonly input: HTMLInputElement,
    private readonly events: SearchEvents,
  ) {
    input.addEventListener("input", () => this.schedule());
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        if (input.value === "") this.events.onEscapeEmpty();
        else this.clear();
      } else if (event.key === "ArrowDown" || event.key === "Enter") {
        event.preventDefault();
        // Results for what is typed now, then leave.
        if (this.timer !== 0) void this.runNow().then(() => this.events.onLeave(event.key === "Enter" ? "enter" : "arrow"));
        else this.events.onLeave(event.key === "Enter" ? "enter" : "arrow");
      }
    });
  }

  /** The query whose results are shown, or "" when not searching. */
  get query(): string {
    return this.current;
  }

  focus(): void {
    this.input.focus();
    this.input.select();
  }

  /** Empties the box and goes back to the list. */
  clear(): void {
    window.clearTimeout(this.timer);
    this.timer = 0;
    this.generation++;
    this.input.value = "";
    if (this.current !== "") {
      this.current = "";
      this.events.onCleared();
    }
  }

  /** Runs the shown query again (notes changed). */
  rerun(): void {
    if (this.current !== "" && this.timer === 0) void this.runNow();
  }

  private schedule(): void {
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => void this.runNow(), DEBOUNCE_MS);
  }

  private async runNow(): Promise<void> {
    window.clearTimeout(this.timer);
    this.timer = 0;
    const query = this.input.value.trim();
    const generation = ++this.generation;
    if (query === "") {
      if (this.current !== "") {
        this.current = "";
        this.events.onCleared();
      }
      return;
    }
    try {
      const hits = await searchNotes(query);
      if (generation !== this.generation) return;
      this.current = query;
      this.events.onResults(query, hits);
    } catch (err) {
      if (generation !== this.generation) return;
      this.events.onError(query, errorText(err));
    }
  }
}
