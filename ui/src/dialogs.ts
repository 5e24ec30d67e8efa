// Shared behaviour of the window's `<dialog>`s: the confirm dialog (a modal
// yes/no before something that cannot be undone), and closing a dialog from its
// ✕ button. Escape closing a dialog is the browser's own (`cancel`).

import { byId } from "./dom";

/** Wires every `.dialog-close` button to close its dialog. */
export function wireCloseButtons(root: ParentNode): void {
  for (const button of root.querySelectorAll<HTMLButtonElement>(".dialog-close")) {
    button.addEventListener("click", () => button.closest("dialog")?.close());
  }
}

/** Asks `question`; resolves true only if the person chose `action`. */
export function confirmAction(question: string, action: string): Promise<boolean> {
  const dialog = byId("confirm-dialog", HTMLDialogElement);
  const ok = byId("confirm-ok", HTMLButtonElement);
  const cancel = byId("confirm-cancel", HTMLButtonElement);
  byId("confirm-message", HTMLParagraphElement).textContent = question;
  ok.textContent = action;
  return new Promise((resolve) => {
    let answer = false;
    const onOk = (): void => {
      answer = true;
      dialog.close();
    };
    const onCancel = (): void => dialog.close();
    ok.addEventListener("click", onOk);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener(
      "close",
      () => {
        ok.removeEventListener("click", onOk);
        cancel.removeEventListener("click", onCancel);
        resolve(answer);
      },
      { once: true },
    );
    dialog.showModal();
    // The safe choice has the focus, so Enter by reflex does not remove anyone.
    cancel.focus();
  });
}
