// Edits typed into a note before its document has loaded.
//
// The editor shows the store's cached text at once; a long history takes a
// while to load into the window's replica. What the user types meanwhile is
// recorded here as splices against that text, in order, and made on the
// document once it has loaded: as one change at the heads the cached text is
// of. If nothing arrived during the load that is simply the document's
// present; if something did, Automerge merges the early edits with it like any
// concurrent edit, so no keystroke is lost or reordered.

import * as A from "@automerge/automerge/slim";
import { type Extension } from "@codemirror/state";
import { EditorView } from "@codemirror/view";

/** One splice of the note's text, at a position in the text as it was just
 * before it (UTF-16 code units, as CodeMirror and Automerge's JS API count). */
export interface Splice {
  at: number;
  remove: number;
  insert: string;
}

export class EarlyEdits {
  readonly edits: Splice[] = [];

  /** `heads`: the document heads the text the edits start from is of. */
  constructor(readonly heads: string[]) {}
}

/** Records every change made in the editor into `early`. */
export function recordEarlyEdits(early: EarlyEdits): Extension {
  return EditorView.updateListener.of((update) => {
    for (const tr of update.transactions) {
      // Ascending, each at its position in the text after the ones before it
      // (`fromB`), so applying them in order rebuilds the editor's text.
      tr.changes.iterChanges((fromA, toA, fromB, _toB, inserted) => {
        early.edits.push({ at: fromB, remove: toA - fromA, insert: inserted.toString() });
      });
    }
  });
}

/** The document with the early edits made on it. `typed` is the editor's text
 * (the cached text with the edits): if the edits cannot be placed at their
 * heads (a document that does not know them), the document's text is made
 * `typed`, so what the user sees is what is kept. */
export function withEarlyEdits<T extends { text: string }>(doc: A.Doc<T>, early: EarlyEdits | null, typed: string): A.Doc<T> {
  if (early === null || early.edits.length === 0) return doc;
  const edits = early.edits.splice(0);
  const apply = (d: T) => {
    for (const e of edits) A.splice(d, ["text"], e.at, e.remove, e.insert);
  };
  if (sameHeads(A.getHeads(doc), early.heads)) return A.change(doc, apply);
  if (A.hasHeads(doc, early.heads)) return A.changeAt(doc, early.heads, apply).newDoc;
  return A.change(doc, (d: T) => A.updateText(d, ["text"], typed));
}

function sameHeads(a: string[], b: string[]): boolean {
  return a.length === b.length && [...a].sort().join() === [...b].sort().join();
}
