// Rendering of the note list (sidebar) and the read-only note viewer (main pane).
// Pure DOM output from data passed in: no IPC, no state of its own, so `main.ts`
// decides what is shown and when. Text is always set with `textContent`, never
// parsed as HTML, because note text comes from other devices.

import type { NoteId, NoteSummary, NoteView } from "./ipc";

/** What the main pane shows. */
export type ViewerState =
  | { kind: "empty" }
  | { kind: "none-selected" }
  | { kind: "note"; note: NoteView }
  | { kind: "error"; title: string; message: string };

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

const dateFmt = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
const dateYearFmt = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

function startOfDay(ms: number): number {
  const d = new Date(ms);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

/** "just now", "5 min ago", "3 h ago", "yesterday", "4 days ago", then a date. */
export function relativeTime(ms: number, now: number): string {
  const age = now - ms;
  if (age < 45_000) return "just now";
  if (age < HOUR) return `${Math.max(1, Math.round(age / MINUTE))} min ago`;
  const days = Math.round((startOfDay(now) - startOfDay(ms)) / DAY);
  if (days <= 0) return `${Math.floor(age / HOUR)} h ago`;
  if (days === 1) return "yesterday";
  if (days < 7) return `${days} days ago`;
  const sameYear = new Date(ms).getFullYear() === new Date(now).getFullYear();
  return (sameYear ? dateFmt : dateYearFmt).format(ms);
}

/** A `<time>` element showing a relative time, with the exact time on hover. */
function timeElement(ms: number, now: number, className: string, prefix = ""): HTMLTimeElement {
  const el = document.createElement("time");
  el.className = className;
  el.dateTime = new Date(ms).toISOString();
  el.title = fullFmt.format(ms);
  el.dataset.ms = String(ms);
  el.dataset.prefix = prefix;
  el.textContent = prefix + relativeTime(ms, now);
  return el;
}

/** Brings every relative time under `root` up to `now`, touching nothing else. */
export function refreshTimes(root: ParentNode, now: number): void {
  for (const el of root.querySelectorAll<HTMLTimeElement>("time[data-ms]")) {
    const text = (el.dataset.prefix ?? "") + relativeTime(Number(el.dataset.ms), now);
    if (el.textContent !== text) el.textContent = text;
  }
}

function span(className: string, text: string): HTMLSpanElement {
  const el = document.createElement("span");
  el.className = className;
  el.textContent = text;
  return el;
}

/** A title to show for a note whose first line is blank. */
export function displayTitle(title: string): string {
  return title.trim() === "" ? "Untitled" : title;
}

function noteItem(note: NoteSummary, selected: boolean, now: number): HTMLLIElement {
  const li = document.createElement("li");
  li.className = "note-item";
  li.id = `note-item-${note.id}`;
  li.dataset.noteId = note.id;
  li.setAttribute("role", "option");
  li.setAttribute("aria-selected", String(selected));

  const title = span("note-title", displayTitle(note.title));
  if (note.title.trim() === "") title.classList.add("untitled");

  // Second line: when, then what (the title gets the whole first line).
  const detail = document.createElement("div");
  detail.className = "note-item-detail";
  detail.append(timeElement(note.updated_at, now, "note-time"), span("note-snippet", note.snippet));

  li.append(title, detail);
  return li;
}

/** Replaces the sidebar's contents with `notes`, marking `selected`. */
export function renderList(
  list: HTMLElement,
  count: HTMLElement,
  notes: readonly NoteSummary[],
  selected: NoteId | null,
  now: number,
): void {
  count.textContent = notes.length === 0 ? "" : String(notes.length);
  if (notes.length === 0) {
    list.removeAttribute("aria-activedescendant");
    const empty = document.createElement("li");
    empty.className = "note-list-empty";
    empty.textContent = "No notes yet";
    list.replaceChildren(empty);
    return;
  }
  list.replaceChildren(...notes.map((n) => noteItem(n, n.id === selected, now)));
  if (selected !== null && notes.some((n) => n.id === selected)) {
    list.setAttribute("aria-activedescendant", `note-item-${selected}`);
  } else {
    list.removeAttribute("aria-activedescendant");
  }
}

/** Moves the selected mark to `selected` without rebuilding the list. */
export function markSelected(list: HTMLElement, selected: NoteId | null): void {
  let found = false;
  for (const item of list.querySelectorAll<HTMLElement>(".note-item")) {
    const isSelected = item.dataset.noteId === selected;
    item.setAttribute("aria-selected", String(isSelected));
    found ||= isSelected;
  }
  if (found) list.setAttribute("aria-activedescendant", `note-item-${selected}`);
  else list.removeAttribute("aria-activedescendant");
}

/** Scrolls the selected item into view if it is off screen. */
export function revealSelected(list: HTMLElement): void {
  list.querySelector<HTMLElement>('.note-item[aria-selected="true"]')?.scrollIntoView({ block: "nearest" });
}

function placeholder(className: string, heading: string | null, body: (Node | string)[]): HTMLElement {
  const box = document.createElement("div");
  box.className = `placeholder ${className}`;
  if (heading !== null) {
    const h = document.createElement("h2");
    h.textContent = heading;
    box.append(h);
  }
  const p = document.createElement("p");
  p.append(...body);
  box.append(p);
  return box;
}

function code(text: string): HTMLElement {
  const el = document.createElement("code");
  el.textContent = text;
  return el;
}

/** Replaces the main pane's contents according to `state`. */
export function renderViewer(viewer: HTMLElement, state: ViewerState, now: number): void {
  switch (state.kind) {
    case "empty":
      viewer.replaceChildren(
        placeholder("empty-state", null, ["No notes yet — create one with ", code("peernotes new")]),
      );
      return;
    case "none-selected":
      viewer.replaceChildren(placeholder("empty-state", null, ["Pick a note on the left to read it."]));
      return;
    case "error":
      viewer.replaceChildren(placeholder("error-state", state.title, [state.message]));
      return;
    case "note": {
      const { note } = state;
      const header = document.createElement("header");
      header.className = "note-header";

      const title = document.createElement("h1");
      title.id = "note-title";
      title.textContent = displayTitle(note.title);

      const meta = document.createElement("div");
      meta.className = "note-meta";
      meta.append(timeElement(note.updated_at, now, "note-edited", "Edited "));
      meta.append(span("meta-sep", "·"));
      const created = document.createElement("time");
      created.className = "note-created";
      created.dateTime = new Date(note.created_at).toISOString();
      created.title = fullFmt.format(note.created_at);
      created.textContent = `Created ${dateYearFmt.format(note.created_at)}`;
      meta.append(created);
      if (note.trashed) meta.append(span("meta-sep", "·"), span("note-trashed", "In trash"));
      header.append(title, meta);

      const text = document.createElement("pre");
      text.id = "note-text";
      text.className = "note-text";
      text.textContent = note.text;

      const scroller = document.createElement("div");
      scroller.className = "note-body";
      scroller.append(text);

      viewer.replaceChildren(header, scroller);
      return;
    }
  }
}
