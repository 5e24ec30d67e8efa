// Typed wrappers over Tauri IPC: the commands and events `src-tauri` exposes.
// This is the only module that names a command or event string; nothing else in
// the UI calls `invoke` or `listen` directly. No rendering, no state.
//
// Sync payloads are binary both ways (raw request body, raw response), never
// JSON arrays of numbers.

import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";

/** A note id as the backend serialises it (opaque string). */
export type NoteId = string;
/** A space id (32 hex digits). */
export type SpaceId = string;

/** One row of the note list (mirrors `peernotes_sync::NoteSummary`). */
export interface NoteSummary {
  id: NoteId;
  space: SpaceId | null;
  title: string;
  snippet: string;
  /** Unix milliseconds. */
  created_at: number;
  /** Unix milliseconds. */
  updated_at: number;
  /** Who made the latest change: a member's name, "you", or null if unknown. */
  updated_by: string | null;
  trashed: boolean;
}

/** A whole note as stored (mirrors `peernotes_sync::NoteView`). Its `text` is the
 * store's cached text: available at once, before the document loads. */
export interface NoteView {
  id: NoteId;
  space: SpaceId | null;
  title: string;
  text: string;
  /** Unix milliseconds. */
  created_at: number;
  /** Unix milliseconds. */
  updated_at: number;
  trashed: boolean;
  /** The document heads `text` is the text of (empty if unknown). */
  heads: string[];
}

/** A full-text search result; `snippet` marks matches with `[` and `]`. */
export interface SearchHit {
  id: NoteId;
  title: string;
  snippet: string;
}

/** A space (mirrors `peernotes_sync::SpaceInfo`). */
export interface SpaceInfo {
  id: SpaceId;
  name: string;
  /** The device's own space, synced only to the user's other devices. */
  private: boolean;
  members: number;
  notes: number;
  /** Who removed this device from the space, if someone did: it no longer syncs. */
  removed_by: string | null;
}

/** A member of a space (mirrors `peernotes_sync::Member`). */
/** What a member may do in a space. */
export type Role = "owner" | "editor" | "viewer";

export interface Member {
  node_id: string;
  name: string;
  added_by: string;
  /** Unix milliseconds. */
  added_at: number;
  role: Role;
  /** Node id of the person this device belongs to (its first device); absent
   * in spaces made before signed membership. */
  person?: string;
}

/** One member of one space, as this device sees it (mirrors `PeerStatus`). */
export interface PeerStatus {
  space: SpaceId;
  space_name: string;
  node_id: string;
  name: string;
  /** The node id of the person this device belongs to, and that person's name. */
  person: string;
  person_name: string;
  /** One of this device's person's other devices. */
  yours: boolean;
  role: Role;
  /** This device is an owner of the space: it may change roles and remove. */
  you_manage: boolean;
  connected: boolean;
  /** Unix milliseconds of the last connection or disconnection. */
  last_seen: number | null;
  /** Documents the member has not acknowledged from us. */
  waiting: number;
  /** Documents the member announced changes to that we lack. */
  incoming: number;
  documents: number;
}

/** The network side of the window, for the status bar and the peers panel. */
export interface NetworkStatus {
  /** This device's node id. */
  node_id: string;
  /** False while the transport is starting, or if it could not start. */
  online: boolean;
  /** Why the transport is not running, if it failed. */
  problem: string | null;
  peers: PeerStatus[];
}

/** What "Invite to space" shows. */
export interface Invitation {
  /** `peernotes1…` text, or null for a short-code invitation. */
  ticket: string | null;
  /** The ticket as an SVG QR code (markup), or null. */
  qr_svg: string | null;
  /** A short code such as `7-amber-falcon`, or null (needs mDNS on a LAN). */
  code: string | null;
  /** Why there is no short code, if there is none. */
  code_unavailable: string | null;
  /** Unix milliseconds after which the invitation is refused. */
  expires_at: number;
}

/** The result of joining a space. */
export interface Joined {
  space: SpaceId;
  space_name: string;
  /** This device was linked as one more device of the inviter's person. */
  linked: boolean;
}

/** Error kinds the backend reports (mirrors `commands::CommandError`). */
export type ErrorKind = "invalid_note_id" | "note_not_found" | "invalid" | "pairing" | "held" | "storage" | "internal";

/** A failed command: `kind` to branch on, `message` to show a person. */
export class CommandError extends Error {
  readonly kind: ErrorKind;

  constructor(kind: ErrorKind, message: string) {
    super(message);
    this.name = "CommandError";
    this.kind = kind;
  }
}

const ERROR_KINDS: readonly ErrorKind[] = ["invalid_note_id", "note_not_found", "invalid", "pairing", "held", "storage", "internal"];

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

// ---- holding the data dir ----

/** The process holding a data dir (mirrors `control::Holder`). */
export interface Holder {
  kind: "app" | "serve" | "unknown";
  pid: number;
  /** Unix milliseconds it started holding the data dir. */
  since: number;
  node_id: string;
}

/** Whether this window holds its data dir (mirrors `commands::DeviceState`). */
export interface DeviceState {
  /** The process holding it instead, while it does. */
  held_by: Holder | null;
}

export function deviceState(): Promise<DeviceState> {
  return call<DeviceState>("device_state");
}

/** Asks the daemon holding the data dir to save and stop; this window holds it after. */
export function takeOver(): Promise<void> {
  return call<void>("take_over");
}

// ---- notes ----

/** Notes of one space (or every space), most recently edited first. */
export function listNotes(space: SpaceId | null, trash = false): Promise<NoteSummary[]> {
  return call<NoteSummary[]>("list_notes", { space, trash });
}

/** One note's cached text and metadata (fast: no document is loaded). */
export function getNote(id: NoteId): Promise<NoteView> {
  return call<NoteView>("get_note", { id });
}

/** Full-text search over every note not in the trash. */
export function searchNotes(query: string): Promise<SearchHit[]> {
  return call<SearchHit[]>("search_notes", { query });
}

/** Creates a note in `space` (null: the private space) and returns it. */
export function createNote(space: SpaceId | null, text: string): Promise<NoteSummary> {
  return call<NoteSummary>("create_note", { space, text });
}

/** Moves a note to the trash; `restoreNote` brings it back. */
export function trashNote(id: NoteId): Promise<void> {
  return call<void>("trash_note", { id });
}

export function restoreNote(id: NoteId): Promise<void> {
  return call<void>("restore_note", { id });
}

// ---- a note's document, synced with the backend by Automerge's protocol ----

/** The note's whole Automerge document (`save()` bytes), to load in the UI. */
export async function loadNoteDoc(id: NoteId): Promise<Uint8Array> {
  const bytes = await call<ArrayBuffer>("load_note_doc", { id });
  return new Uint8Array(bytes);
}

/** Sends one Automerge sync message for `id` (or none, to ask for news) and
 * returns the backend's reply, or null if it has nothing to say. */
export async function syncNote(id: NoteId, message: Uint8Array | null): Promise<Uint8Array | null> {
  let reply: ArrayBuffer;
  try {
    // The message is the raw request body; the note id travels in a header.
    reply = await invoke<ArrayBuffer>("sync_note", message ?? new Uint8Array(0), { headers: { "note-id": id } });
  } catch (raw) {
    throw toCommandError(raw);
  }
  return reply.byteLength === 0 ? null : new Uint8Array(reply);
}

/** This device's node id (the window's Automerge actor ids start with it). */
export function deviceId(): Promise<string> {
  return call<string>("device_id");
}

/** Forgets the window's sync state for a note it no longer shows. */
export function closeNoteDoc(id: NoteId): Promise<void> {
  return call<void>("close_note_doc", { id });
}

/** Shares where the local cursor is in an open note (character offsets). */
export function setPresence(id: NoteId, anchor: number, head: number): Promise<void> {
  return call<void>("set_presence", { id, anchor, head });
}

// ---- spaces, peers and pairing ----

export function listSpaces(): Promise<SpaceInfo[]> {
  return call<SpaceInfo[]>("list_spaces");
}

export function createSpace(name: string): Promise<SpaceInfo> {
  return call<SpaceInfo>("create_space", { name });
}

export function listMembers(space: SpaceId): Promise<Member[]> {
  return call<Member[]>("list_members", { space });
}

export function removeMember(space: SpaceId, nodeId: string): Promise<void> {
  return call<void>("remove_member", { space, nodeId });
}

/** Gives a member of `space` another role (this device must be an owner). */
export function setRole(space: SpaceId, nodeId: string, role: Role): Promise<void> {
  return call<void>("set_role", { space, nodeId, role });
}

export function networkStatus(): Promise<NetworkStatus> {
  return call<NetworkStatus>("network_status");
}

/** Starts inviting a device into `space`; the invitation lasts `minutes`. */
export function invite(space: SpaceId, minutes: number, role: Role = "editor"): Promise<Invitation> {
  return call<Invitation>("invite", { space, minutes, role });
}

/** Withdraws the open invitation, if any. */
export function cancelInvite(): Promise<void> {
  return call<void>("cancel_invite");
}

/** Joins with a ticket (`peernotes1…`) or a short code (`7-amber-falcon`). */
/** Opens an invitation that links one more device of this person. */
export function inviteDevice(minutes: number): Promise<Invitation> {
  return call<Invitation>("invite_device", { minutes });
}

/** Revokes one of this person's devices in every space. */
export function removeDevice(nodeId: string): Promise<void> {
  return call<void>("remove_device", { nodeId });
}

export function join(invitation: string, name: string | null): Promise<Joined> {
  return call<Joined>("join", { invitation, name });
}

// ---- events ----

/** Payload of `notes-changed`: which note changed, if the backend knows. */
export interface NotesChanged {
  id: NoteId | null;
}

/** Payload of `peers-changed`. */
export interface PeersChanged {
  peer: string;
  connected: boolean;
}

/** Payload of `pairing`: how a pairing is going (either side). */
export type PairingProgress =
  | { step: "looking-for-inviter" }
  | { step: "exchanging"; with: string }
  | { step: "joiner-arrived"; joiner: string }
  | { step: "paired"; space: SpaceId; member: string; name: string }
  | { step: "failed"; reason: string };

/** Payload of `presence`: where a member's cursor is in a note. */
export interface Presence {
  note: NoteId;
  peer: string;
  name: string;
  /** A colour for the member, as CSS. */
  color: string;
  anchor: number;
  head: number;
}

/** Payload of `presence-gone`: a member left (its cursors vanish). */
export interface PresenceGone {
  peer: string;
}

/** Payload of `removed-from-space`: an owner removed this device from a space. */
export interface RemovedFromSpace {
  space: SpaceId;
  space_name: string;
  by: string;
}

export function onRemovedFromSpace(handler: (removed: RemovedFromSpace) => void): Promise<UnlistenFn> {
  return on<RemovedFromSpace>("removed-from-space", handler);
}

/** Payload of `store-problem`: writing failed; edits are kept and retried. */
export interface StoreProblem {
  message: string;
}

function on<T>(event: string, handler: (payload: T) => void): Promise<UnlistenFn> {
  return listen<T>(event, (e) => handler(e.payload));
}

/** A note was created, edited, trashed, or changed by a peer. */
export function onNotesChanged(handler: (change: NotesChanged) => void): Promise<UnlistenFn> {
  return on<NotesChanged | null>("notes-changed", (p) => handler({ id: p?.id ?? null }));
}

/** A space's name, members or notes changed. */
export function onSpacesChanged(handler: () => void): Promise<UnlistenFn> {
  return on<unknown>("spaces-changed", () => handler());
}

export function onPeersChanged(handler: (change: PeersChanged) => void): Promise<UnlistenFn> {
  return on<PeersChanged>("peers-changed", handler);
}

export function onPairing(handler: (progress: PairingProgress) => void): Promise<UnlistenFn> {
  return on<PairingProgress>("pairing", handler);
}

export function onPresence(handler: (presence: Presence) => void): Promise<UnlistenFn> {
  return on<Presence>("presence", handler);
}

export function onPresenceGone(handler: (gone: PresenceGone) => void): Promise<UnlistenFn> {
  return on<PresenceGone>("presence-gone", handler);
}

export function onStoreProblem(handler: (problem: StoreProblem) => void): Promise<UnlistenFn> {
  return on<StoreProblem>("store-problem", handler);
}

/** Writing to the store works again after a `store-problem`: all is saved. */
export function onStoreRecovered(handler: () => void): Promise<UnlistenFn> {
  return on<null>("store-recovered", () => handler());
}
