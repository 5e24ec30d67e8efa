// The take-over dialog (`#takeover-dialog`): shown at start when a
// `peernotes serve` daemon holds this data dir. It names the daemon; "Take
// over" has it save and stop, and the window holds the data dir from then on.
// Until then nothing else in the window can load, so the dialog cannot be
// dismissed.

import { byId, errorText } from "./dom";
import { deviceState, takeOver, type Holder } from "./ipc";
import { relativeTime } from "./time";

function describe(holder: Holder): string {
  const who = holder.kind === "serve" ? "The peernotes serve daemon" : "Another Peernotes process";
  return `${who} (pid ${holder.pid}, started ${relativeTime(holder.since, Date.now())}) holds this data dir and keeps it in sync.`;
}

/** Resolves once this window holds its data dir: at once, or after taking
 * over from the daemon. True if it took over. */
export async function holdDataDir(): Promise<boolean> {
  const state = await deviceState();
  if (state.held_by === null) return false;
  const dialog = byId("takeover-dialog", HTMLDialogElement);
  const message = byId("takeover-message", HTMLParagraphElement);
  const error = byId("takeover-error", HTMLParagraphElement);
  const ok = byId("takeover-ok", HTMLButtonElement);
  message.textContent = describe(state.held_by);
  error.textContent = "";
  // Escape would close it with nothing to show behind it.
  dialog.addEventListener("cancel", (event) => event.preventDefault());
  dialog.showModal();
  await new Promise<void>((resolve) => {
    ok.addEventListener("click", async () => {
      ok.disabled = true;
      ok.textContent = "Taking over…";
      error.textContent = "";
      try {
        await takeOver();
        dialog.close();
        resolve();
      } catch (err) {
        error.textContent = `Could not take over: ${errorText(err)}`;
        ok.disabled = false;
        ok.textContent = "Take over";
      }
    });
  });
  return true;
}
