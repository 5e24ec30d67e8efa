// The toast (`#toast`): one short message at the bottom of the window with an
// optional action ("Moved to trash — Undo"), gone after 6 s. A new toast
// replaces the one showing.

import { byId } from "./dom";

const SHOW_MS = 6000;

export class Toast {
  private readonly toast = byId("toast", HTMLDivElement);
  private readonly message = byId("toast-message", HTMLSpanElement);
  private readonly button = byId("toast-undo", HTMLButtonElement);
  private action: (() => void) | null = null;
  private timer = 0;

  constructor() {
    this.button.addEventListener("click", () => {
      const action = this.action;
      this.hide();
      action?.();
    });
  }

  /** Shows `message`; with `action`, a button labelled `label` that runs it once. */
  show(message: string, action: { label: string; run: () => void } | null = null): void {
    window.clearTimeout(this.timer);
    this.message.textContent = message;
    this.action = action?.run ?? null;
    this.button.hidden = action === null;
    this.button.textContent = action?.label ?? "";
    this.toast.hidden = false;
    this.timer = window.setTimeout(() => this.hide(), SHOW_MS);
  }

  hide(): void {
    window.clearTimeout(this.timer);
    this.toast.hidden = true;
    this.action = null;
  }
}
