// The orchestrator's side of a peer process (lib/peer.mjs): spawn, call ops, hear events,
// stop. Owns: the child process and its IPC channel. Must not: measure anything itself —
// the figures come from stamps taken inside the peers.

import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";

const PEER = fileURLToPath(new URL("./peer.mjs", import.meta.url));

export class Peer {
  /** Every peer spawned and not yet exited, so a failed run can stop them all. */
  static running = new Set();
  #child;
  #next = 1;
  #pending = new Map();
  #listeners = new Map();
  #exited;

  /** Starts `lib/peer.mjs` as `name`; resolves once it has loaded (wasm included). */
  static async spawn(name) {
    const peer = new Peer();
    const spawnedAt = process.hrtime.bigint();
    const child = fork(PEER, [name], { stdio: ["ignore", 2, 2, "ipc"] });
    peer.#child = child;
    Peer.running.add(peer);
    child.once("exit", () => Peer.running.delete(peer));
    peer.#exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    child.on("message", (msg) => peer.#receive(msg));
    child.once("exit", (code, signal) => {
      for (const { reject } of peer.#pending.values()) reject(new Error(`${name} exited (${code ?? signal})`));
      peer.#pending.clear();
    });
    const started = await new Promise((resolve, reject) => {
      peer.on("started", resolve);
      child.once("error", reject);
      child.once("exit", (code) => reject(new Error(`${name} exited (${code}) before starting`)));
    });
    peer.name = name;
    peer.spawnedAt = spawnedAt;
    peer.loadedAt = BigInt(started.at);
    return peer;
  }

  #receive(msg) {
    if (msg.event) {
      for (const fn of this.#listeners.get(msg.event) ?? []) fn(msg);
      return;
    }
    const waiter = this.#pending.get(msg.id);
    if (!waiter) return;
    this.#pending.delete(msg.id);
    if (msg.error) waiter.reject(new Error(`${this.name}: ${msg.error}`));
    else waiter.resolve(msg.result);
  }

  on(event, fn) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, []);
    this.#listeners.get(event).push(fn);
  }

  call(op, args = {}) {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#child.send({ id, op, args });
    });
  }

  /** Asks the peer to save and exit; kills it (by its pid) if it has not within 10 s. */
  async close() {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), 10000);
    try {
      await this.call("close");
    } catch {
      // it may exit before answering
    }
    await this.#exited;
    clearTimeout(timer);
  }

  kill() {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill("SIGKILL");
  }
}
