// Window-wide keyboard shortcuts: Ctrl+N new note, Ctrl+P quick switcher,
// Ctrl+F / Ctrl+K search, Ctrl+Delete (and Ctrl+Backspace outside the editor)
// trash the open note, Escape closes the peers panel. Listens in the capture
// phase so the editor does not also act on them; ⌘ stands for Ctrl on macOS.
// While a modal dialog is open only the dialog's own keys apply.

export interface ShortcutActions {
  newNote(): void;
  quickSwitcher(): void;
  focusSearch(): void;
  trashOpenNote(): void;
  /** Escape with no dialog open; returns whether it closed something. */
  escape(): boolean;
  /** Focus is inside the note editor. */
  editorFocused(): boolean;
}

const MAC = /Mac|iPhone|iPad/.test(navigator.platform);

/** Tooltips say ⌘ on macOS, Ctrl elsewhere. */
export function localiseShortcutTitles(root: ParentNode): void {
  if (!MAC) return;
  for (const el of root.querySelectorAll<HTMLElement>("[title*='Ctrl+']")) el.title = el.title.replaceAll("Ctrl+", "⌘");
  for (const el of root.querySelectorAll<HTMLElement>(".status-hint")) el.textContent = (el.textContent ?? "").replaceAll("Ctrl+", "⌘");
}

function modalOpen(): boolean {
  return document.querySelector("dialog[open]") !== null;
}

export function installShortcuts(actions: ShortcutActions): void {
  window.addEventListener(
    "keydown",
    (event) => {
      if (event.isComposing) return;
      if (event.key === "Escape") {
        if (!modalOpen() && actions.escape()) event.preventDefault();
        return;
      }
      const mod = MAC ? event.metaKey : event.ctrlKey;
      if (!mod || event.altKey) return;
      const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
      if (modalOpen()) {
        // Ours even then, so the webview does not print or find instead.
        if (["n", "p", "f", "k"].includes(key)) event.preventDefault();
        return;
      }
      switch (key) {
        case "n":
          if (event.shiftKey) return;
          actions.newNote();
          break;
        case "p":
          actions.quickSwitcher();
          break;
        case "f":
        case "k":
          actions.focusSearch();
          break;
        case "Delete":
          actions.trashOpenNote();
          break;
        case "Backspace": {
          // In the editor (or any text field) Ctrl+Backspace deletes a word.
          const target = event.target as Element | null;
          const typing = target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement;
          if (actions.editorFocused() || typing) return;
          actions.trashOpenNote();
          break;
        }
        default:
          return;
      }
      event.preventDefault();
      event.stopPropagation();
    },
    { capture: true },
  );
}
