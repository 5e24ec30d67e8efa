// The window's view of the network: fetches `networkStatus()` when asked (peers
// came or went), soon after notes change (debounced, 500 ms), and every 10 s,
// and hands each result to its listeners (the status bar, the peers panel). The
// only caller of `networkStatus`.

import { errorText } from "./dom";
import { networkStatus, type NetworkStatus } from "./ipc";

export type NetworkListener = (status: NetworkStatus | null, error: string | null) => void;

const POLL_MS = 10_000;
const SOON_MS = 500;

export class NetworkWatch {
  private readonly listeners: NetworkListener[] = [];
  private latestStatus: NetworkStatus | null = null;
  private soonTimer = 0;
  private generation = 0;

  subscribe(listener: NetworkListener): void {
    this.listeners.push(listener);
  }

  get latest(): NetworkStatus | null {
    return this.latestStatus;
  }

  /** Starts the 10 s poll and fetches once now. */
  start(): void {
    window.setInterval(() => void this.refresh(), POLL_MS);
    void this.refresh();
  }

  /** Fetches within 500 ms; several calls in that time cost one fetch. */
  soon(): void {
    if (this.soonTimer !== 0) return;
    this.soonTimer = window.setTimeout(() => {
      this.soonTimer = 0;
      void this.refresh();
    }, SOON_MS);
  }

  /** Fetches now; an answer older than one already shown is dropped. */
  async refresh(): Promise<void> {
    const generation = ++this.generation;
    let status: NetworkStatus | null = null;
    let error: string | null = null;
    try {
      status = await networkStatus();
    } catch (err) {
      error = errorText(err);
    }
    if (generation !== this.generation) return;
    if (status !== null) this.latestStatus = status;
    for (const listener of this.listeners) listener(status, error);
  }
}
