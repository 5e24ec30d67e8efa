// The status bar (bottom): whether this device is online and how many peers are
// connected, and an honest sync summary — "In sync with N peers" only when a
// peer is connected and none has anything waiting either way, otherwise how
// many notes wait in which direction, or since when no peer has been reachable. `describeNetwork` is the
// wording (pure); `StatusBar` puts it on screen.

import { byId } from "./dom";
import type { NetworkStatus } from "./ipc";
import { clockTime } from "./time";

export type NetworkTone = "synced" | "pending" | "offline" | "problem" | "alone";

export interface NetworkSummary {
  connection: string;
  sync: string;
  tone: NetworkTone;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** The status bar's words for `status` at `now`. Peers are counted once
 * however many spaces they share with us; notes waiting are summed per space. */
export function describeNetwork(status: NetworkStatus, now: number): NetworkSummary {
  if (!status.online) {
    return status.problem === null
      ? { connection: "Starting network…", sync: "", tone: "offline" }
      : { connection: "Network off", sync: status.problem, tone: "problem" };
  }
  const peers = new Set(status.peers.map((p) => p.node_id));
  const connected = new Set(status.peers.filter((p) => p.connected).map((p) => p.node_id));
  const toSend = status.peers.reduce((sum, p) => sum + p.waiting, 0);
  const toReceive = status.peers.reduce((sum, p) => sum + p.incoming, 0);
  const lastSeen = status.peers.reduce<number | null>((max, p) => (p.last_seen !== null && (max === null || p.last_seen > max) ? p.last_seen : max), null);

  if (peers.size === 0) return { connection: "Online", sync: "No other devices yet — invite one to sync", tone: "alone" };

  const connection =
    connected.size > 0
      ? `Online · ${plural(connected.size, "peer")} connected`
      : lastSeen === null
        ? "Offline · no peer reached yet"
        : `Offline since ${clockTime(lastSeen, now)}`;

  let sync: string;
  if (toSend + toReceive === 0) {
    // With nobody connected, "in sync" would be a claim about peers we cannot
    // see; what we do know is that each acknowledged everything we had.
    sync = connected.size === 0 ? "nothing left to send" : `In sync with ${plural(peers.size, "peer")}`;
  } else {
    const parts: string[] = [];
    if (toSend > 0) parts.push(`${toSend} to send`);
    if (toReceive > 0) parts.push(`${toReceive} to receive`);
    sync = `${plural(toSend + toReceive, "note")} waiting: ${parts.join(" · ")}`;
  }
  const tone: NetworkTone = connected.size === 0 ? "offline" : toSend + toReceive === 0 ? "synced" : "pending";
  return { connection, sync, tone };
}

export class StatusBar {
  private readonly button = byId("peers-button", HTMLButtonElement);
  private readonly dot = byId("status-dot", HTMLSpanElement);
  private readonly connection = byId("status-connection", HTMLSpanElement);
  private readonly sync = byId("status-sync", HTMLSpanElement);

  constructor(onClick: () => void) {
    this.button.addEventListener("click", onClick);
  }

  /** Shows `status`, or `error` if the status could not be read. */
  render(status: NetworkStatus | null, error: string | null, now: number): void {
    const summary: NetworkSummary =
      status === null
        ? { connection: "Status unavailable", sync: error ?? "", tone: "problem" }
        : describeNetwork(status, now);
    // Only changed text is written, so the live region speaks only on change.
    if (this.connection.textContent !== summary.connection) this.connection.textContent = summary.connection;
    if (this.sync.textContent !== summary.sync) this.sync.textContent = summary.sync;
    this.dot.dataset.tone = summary.tone;
    this.button.dataset.tone = summary.tone;
  }

  /** The peers panel opened or closed. */
  setExpanded(open: boolean): void {
    this.button.setAttribute("aria-expanded", String(open));
  }
}
