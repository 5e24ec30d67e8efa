// The sidebar: the views the note list can show (All notes, each space with its
// note count, Trash), the inline "New space" form, and the footer's Invite… and
// Join… buttons. Renders what main.ts hands it and reports choices through
// `SidebarEvents`; calls no command itself.

import { byId, errorText, h, svgIcon } from "./dom";
import type { SpaceId, SpaceInfo } from "./ipc";

/** What the note list shows. */
export type View = { kind: "all" } | { kind: "space"; id: SpaceId } | { kind: "trash" };

export interface SidebarEvents {
  onView(view: View): void;
  /** Creates a space; a rejection's message is shown under the name field. */
  onCreateSpace(name: string): Promise<void>;
  onInvite(): void;
  onJoin(): void;
}

/** How a space is named in the window: the device's own space is "Private". */
export function spaceLabel(space: SpaceInfo): string {
  return space.private ? "Private" : space.name;
}

/** Private first, then by name. */
function bySidebarOrder(a: SpaceInfo, b: SpaceInfo): number {
  if (a.private !== b.private) return a.private ? -1 : 1;
  return spaceLabel(a).localeCompare(spaceLabel(b), undefined, { sensitivity: "base" });
}

function sameView(a: View, b: View): boolean {
  if (a.kind === "space" && b.kind === "space") return a.id === b.id;
  return a.kind === b.kind;
}

export class Sidebar {
  private readonly nav = byId("sidebar", HTMLElement);
  private readonly spaceList = byId("space-list", HTMLUListElement);
  private readonly allCount = byId("all-count", HTMLSpanElement);
  private readonly trashItem = byId("trash-view", HTMLLIElement);
  private readonly form = byId("new-space-form", HTMLFormElement);
  private readonly nameInput = byId("new-space-name", HTMLInputElement);
  private readonly formError = byId("new-space-error", HTMLParagraphElement);
  private readonly error = byId("spaces-error", HTMLParagraphElement);
  private readonly inviteButton = byId("invite-button", HTMLButtonElement);
  private spaces: readonly SpaceInfo[] = [];
  private view: View = { kind: "all" };
  private creating = false;

  constructor(private readonly events: SidebarEvents) {
    this.nav.addEventListener("click", (event) => {
      const item = (event.target as Element).closest("li");
      if (item === null) return;
      if (item === this.trashItem) this.events.onView({ kind: "trash" });
      else if (item.dataset.spaceId === "") this.events.onView({ kind: "all" });
      else if (item.dataset.spaceId !== undefined) this.events.onView({ kind: "space", id: item.dataset.spaceId });
    });
    this.nav.addEventListener("keydown", (event) => this.onKey(event));

    byId("new-space", HTMLButtonElement).addEventListener("click", () => this.startNewSpace());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.submitNewSpace();
    });
    this.nameInput.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        this.endNewSpace();
      }
    });
    this.nameInput.addEventListener("blur", () => {
      if (!this.creating && this.nameInput.value.trim() === "") this.endNewSpace();
    });
    this.inviteButton.addEventListener("click", () => this.events.onInvite());
    byId("join-button", HTMLButtonElement).addEventListener("click", () => this.events.onJoin());
  }

  /** Shows `spaces` with `view` marked as the current one. */
  render(spaces: readonly SpaceInfo[], view: View): void {
    this.spaces = [...spaces].sort(bySidebarOrder);
    this.view = view;
    const total = spaces.reduce((sum, s) => sum + s.notes, 0);
    this.allCount.textContent = spaces.length === 0 ? "" : String(total);

    const focusedId = (document.activeElement?.closest(".space-item") as HTMLElement | null)?.dataset.spaceId;
    const items = this.spaces.map((space) => {
      const button = h(
        "button",
        { class: "nav-button", attrs: { type: "button" } },
        svgIcon(space.private ? "i-lock" : "i-space"),
        h("span", { class: "nav-name" }, spaceLabel(space)),
        h("span", { class: "nav-count", attrs: { "aria-label": `${space.notes} notes` } }, String(space.notes)),
      );
      if (space.removed_by !== null) {
        button.classList.add("removed");
        button.title = `You were removed from ${space.name} by ${space.removed_by}; it no longer syncs`;
      } else if (space.members > 1) button.title = `${space.members} members`;
      return h("li", { class: "space-item", attrs: { "data-space-id": space.id } }, button);
    });
    this.spaceList.replaceChildren(...items);
    if (focusedId !== undefined && focusedId !== "") {
      this.spaceList.querySelector<HTMLElement>(`.space-item[data-space-id="${CSS.escape(focusedId)}"] button`)?.focus();
    }
    this.markView();
  }

  /** The space `id` as known now, or null. */
  space(id: SpaceId | null): SpaceInfo | null {
    return id === null ? null : (this.spaces.find((s) => s.id === id) ?? null);
  }

  get knownSpaces(): readonly SpaceInfo[] {
    return this.spaces;
  }

  /** Shows (or, with null, hides) a problem loading the spaces. */
  setError(message: string | null): void {
    this.error.hidden = message === null;
    this.error.textContent = message ?? "";
  }

  private markView(): void {
    for (const item of this.nav.querySelectorAll<HTMLLIElement>(".space-item, .trash-item")) {
      const view: View =
        item === this.trashItem
          ? { kind: "trash" }
          : item.dataset.spaceId === ""
            ? { kind: "all" }
            : { kind: "space", id: item.dataset.spaceId ?? "" };
      const current = sameView(view, this.view);
      item.classList.toggle("selected", current);
      const button = item.querySelector("button");
      if (current) button?.setAttribute("aria-current", "page");
      else button?.removeAttribute("aria-current");
    }
    const space = this.view.kind === "space" ? this.space(this.view.id) : null;
    this.inviteButton.disabled = space === null;
    this.inviteButton.title =
      space === null ? "Select a space to invite a device into it" : `Invite a device into ${spaceLabel(space)}`;
  }

  /** Opens the inline name field for a new space. */
  startNewSpace(): void {
    this.form.hidden = false;
    this.formError.textContent = "";
    this.nameInput.value = "";
    this.nameInput.removeAttribute("aria-invalid");
    this.nameInput.focus();
  }

  private endNewSpace(): void {
    this.form.hidden = true;
    this.formError.textContent = "";
  }

  private async submitNewSpace(): Promise<void> {
    const name = this.nameInput.value.trim();
    if (name === "") {
      this.formError.textContent = "Give the space a name.";
      this.nameInput.setAttribute("aria-invalid", "true");
      return;
    }
    this.creating = true;
    this.nameInput.disabled = true;
    try {
      await this.events.onCreateSpace(name);
      this.endNewSpace();
    } catch (err) {
      this.formError.textContent = errorText(err);
      this.nameInput.setAttribute("aria-invalid", "true");
    } finally {
      this.creating = false;
      this.nameInput.disabled = false;
      if (!this.form.hidden) this.nameInput.focus();
    }
  }

  /** Arrow keys move between the entries and choose the one they land on. */
  private onKey(event: KeyboardEvent): void {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    const buttons = [...this.nav.querySelectorAll<HTMLButtonElement>(".nav-button")];
    const at = buttons.indexOf(document.activeElement as HTMLButtonElement);
    if (at < 0) return;
    event.preventDefault();
    const next = buttons[at + (event.key === "ArrowDown" ? 1 : -1)];
    if (next === undefined) return;
    next.focus();
    next.click();
  }
}

