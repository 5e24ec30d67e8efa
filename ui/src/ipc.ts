// Typed wrappers over Tauri IPC: the commands and events `src-tauri` exposes.
// This is the only module that names a command or event string; nothing else in
// the UI calls `invoke` or `listen` directly. No rendering, no state.

import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";

/** A note id as the backend serialises it (opaque string). */
export type NoteId = string;

/** One row of the note list (mirrors `peernotes_sync::NoteSummary`). */
export interface NoteSummary {
  id: NoteId;
  title: string;
  snippet: string;
  /** Unix milliseconds. */
  created_at: number;
  /** Unix milliseconds. */
  updated_at: number;
  trashed: boolean;
}

/** A whole note for the viewer (mirrors `peernotes_sync::NoteView`). */
export interface NoteView {
  id: NoteId;
  title: string;
  text: string;
  /** Unix milliseconds. */
  created_at: number;
  /** Unix milliseconds. */
  updated_at: number;
  trashed: boolean;
}

/** Error kinds the backend reports (mirrors `commands::CommandError`). */
export type ErrorKind = "invalid_note_id" | "note_not_found" | "storage" | "internal";

/** A failed command: `kind` to branch on, `message` to show a person. */
export class CommandError extends Error {
  readonly kind: ErrorKind;

  constructor(kind: ErrorKind, message: string) {
    super(message);
    this.name = "CommandError";
    this.kind = kind;
  }
}

/** Payload of the `notes-changed` event: which note changed, if the backend knows. */
export interface NotesChanged {
  id: NoteId | null;
}

const ERROR_KINDS: readonly ErrorKind[] = ["invalid_note_id", "note_not_found", "storage", "internal"];

function toCommandError(raw: unknown): CommandError {
  if (typeof raw === "object" && raw !== null && "kind" in raw && "message" in raw) {
    const { kind, message } = raw as { kind: unknown; message: unknown };
    if (typeof message === "string") {
      const known = ERROR_KINDS.find((k) => k === kind);
      return new CommandError(known ?? "internal", message);
    }
  }
  // A rejection that is not our serialised enum (e.g. IPC itself failed).
  return new CommandError("internal", typeof raw === "string" ? raw : String(raw));
}

async function call<T>(command: string, args?: Record<string, unknown>): Promise<T> {
  try {
    return await invoke<T>(command, args);
  } catch (raw) {
    throw toCommandError(raw);
  }
}

/** Notes that are not in the trash, most recently edited first. */
export function listNotes(): Promise<NoteSummary[]> {
  return call<NoteSummary[]>("list_notes");
}

/** One note's full text and metadata. */
export function getNote(id: NoteId): Promise<NoteView> {
  return call<NoteView>("get_note", { id });
}

/** Calls `handler` whenever the backend says notes changed; resolves to an unsubscribe. */
export function onNotesChanged(handler: (change: NotesChanged) => void): Promise<UnlistenFn> {
  return listen<NotesChanged | null>("notes-changed", (event) => {
    handler({ id: event.payload?.id ?? null });
  });
}
