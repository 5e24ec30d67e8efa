// The peers panel (`#peers-panel`, opened from the status bar): this device's
// node id with a copy button and "Link another device…", then every member of
// every space grouped by space and, within a space, by person ("Ana — laptop,
// desktop") — online dot, "last seen …", "in sync" / "N notes waiting" /
// "offline", its role, and, where this device is an owner, a role menu and a
// Remove button that asks first. A device of this device's own person has
// Revoke instead, which removes it from every space. Changing roles, removing
// and revoking go through `PeersEvents`.

import { confirmAction } from "./dialogs";
import { byId, copyWithFeedback, errorText, h } from "./dom";
import type { NetworkStatus, PeerStatus, Role, SpaceId } from "./ipc";
import { timeElement } from "./time";

export interface PeersEvents {
  /** Removes a member (the person has confirmed); a rejection is shown in the panel. */
  onRemove(space: SpaceId, nodeId: string): Promise<void>;
  /** Gives a member another role; a rejection is shown in the panel. */
  onSetRole(space: SpaceId, nodeId: string, role: Role): Promise<void>;
  /** Revokes one of this person's devices in every space (confirmed). */
  onRemoveDevice(nodeId: string): Promise<void>;
  /** Opens the dialog that links one more of this person's devices. */
  onLinkDevice(): void;
  /** How the window names `space` ("Private" for the device's own). */
  spaceName(space: SpaceId, fallback: string): string;
  /** The panel opened or closed. */
  onToggle(open: boolean): void;
}

/** What `.peer-state` says about one member of one space. */
export function peerState(peer: PeerStatus): string {
  const waiting = peer.waiting + peer.incoming;
  if (waiting > 0) return `${waiting} ${waiting === 1 ? "note" : "notes"} waiting`;
  return peer.connected ? "in sync" : "offline";
}

/** Members grouped by space, spaces and members by name. */
function groups(
  peers: readonly PeerStatus[],
  spaceName: (space: SpaceId, fallback: string) => string,
): { space: SpaceId; name: string; peers: PeerStatus[] }[] {
  const bySpace = new Map<SpaceId, { space: SpaceId; name: string; peers: PeerStatus[] }>();
  for (const peer of peers) {
    let group = bySpace.get(peer.space);
    if (group === undefined) {
      group = { space: peer.space, name: spaceName(peer.space, peer.space_name), peers: [] };
      bySpace.set(peer.space, group);
    }
    group.peers.push(peer);
  }
  const list = [...bySpace.values()].sort((a, b) => a.name.localeCompare(b.name));
  for (const group of list) group.peers.sort((a, b) => a.name.localeCompare(b.name));
  return list;
}

/** One space's members by person: each person's devices together, people by name. */
export function people(peers: readonly PeerStatus[]): { person: string; name: string; yours: boolean; devices: PeerStatus[] }[] {
  const byPerson = new Map<string, { person: string; name: string; yours: boolean; devices: PeerStatus[] }>();
  for (const peer of peers) {
    let person = byPerson.get(peer.person);
    if (person === undefined) {
      person = { person: peer.person, name: peer.yours ? "You" : peer.person_name, yours: peer.yours, devices: [] };
      byPerson.set(peer.person, person);
    }
    person.devices.push(peer);
  }
  return [...byPerson.values()].sort((a, b) => Number(b.yours) - Number(a.yours) || a.name.localeCompare(b.name));
}

/** "Ana — laptop, desktop": a person and the devices listed. */
export function personLine(name: string, devices: readonly PeerStatus[]): string {
  return `${name} — ${devices.map((d) => d.name || d.node_id.slice(0, 8)).join(", ")}`;
}

function peerRow(peer: PeerStatus, now: number): HTMLLIElement {
  const seen =
    peer.connected
      ? h("span", { class: "peer-seen" }, "connected")
      : peer.last_seen === null
        ? h("span", { class: "peer-seen" }, "never seen")
        : timeElement(peer.last_seen, now, "peer-seen", "last seen ");
  const waitingTitle = [
    peer.waiting > 0 ? `${peer.waiting} to send` : "",
    peer.incoming > 0 ? `${peer.incoming} to receive` : "",
  ]
    .filter((s) => s !== "")
    .join(" · ");
  const state = h("span", { class: "peer-state" }, peerState(peer));
  if (waitingTitle !== "") state.title = waitingTitle;
  const roles: Role[] = ["owner", "editor", "viewer"];
  const role = peer.you_manage
    ? h(
        "select",
        {
          class: "peer-role",
          title: `${peer.name}'s role in ${peer.space_name}`,
          attrs: { "data-node-id": peer.node_id, "data-space": peer.space, "aria-label": `Role of ${peer.name}` },
        },
        ...roles.map((r) => {
          const option = h("option", { attrs: { value: r } }, ROLE_NAMES[r]);
          option.selected = r === peer.role;
          return option;
        }),
      )
    : h("span", { class: "peer-role", title: ROLE_HELP[peer.role] }, ROLE_NAMES[peer.role]);
  const remove = peer.yours
    ? h(
        "button",
        {
          class: "small-button peer-revoke",
          title: `Revoke ${peer.name} everywhere: it gets nothing more, and what it writes from now on is refused`,
          attrs: { type: "button", "data-node-id": peer.node_id, "data-space": peer.space },
        },
        "Revoke",
      )
    : peer.you_manage
    ? h(
        "button",
        {
          class: "small-button peer-remove",
          title: `Remove ${peer.name} from ${peer.space_name}`,
          attrs: { type: "button", "data-node-id": peer.node_id, "data-space": peer.space },
        },
        "Remove",
      )
    : h("span", { class: "peer-remove-none" });
  return h(
    "li",
    {
      class: peer.connected ? "peer-row online" : "peer-row",
      attrs: { "data-node-id": peer.node_id, "data-space": peer.space },
    },
    h("span", { class: "peer-dot", title: peer.connected ? "online" : "offline", attrs: { role: "img", "aria-label": peer.connected ? "online" : "offline" } }),
    h("span", { class: "peer-name", title: peer.node_id }, peer.name),
    seen,
    state,
    role,
    remove,
  );
}

const ROLE_NAMES: Record<Role, string> = { owner: "Owner", editor: "Editor", viewer: "Viewer" };
const ROLE_HELP: Record<Role, string> = {
  owner: "Adds, removes and changes the roles of members",
  editor: "Edits the space's notes",
  viewer: "Reads the space's notes",
};

export class PeersPanel {
  private readonly panel = byId("peers-panel", HTMLElement);
  private readonly nodeId = byId("node-id", HTMLElement);
  private readonly copyButton = byId("copy-node-id", HTMLButtonElement);
  private readonly problem = byId("peers-problem", HTMLParagraphElement);
  private readonly groupsEl = byId("peer-groups", HTMLDivElement);
  /** The last status drawn, to skip redrawing (and losing focus) when nothing changed. */
  private drawn = "";
  private latest: NetworkStatus | null = null;
  private networkProblem: string | null = null;
  /** Why the last Remove failed; kept until the next try or the panel closes. */
  private removeProblem: string | null = null;

  constructor(private readonly events: PeersEvents) {
    byId("peers-close", HTMLButtonElement).addEventListener("click", () => this.close());
    this.copyButton.addEventListener("click", () => void copyWithFeedback(this.copyButton, this.nodeId.textContent ?? ""));
    byId("link-device", HTMLButtonElement).addEventListener("click", () => this.events.onLinkDevice());
    this.groupsEl.addEventListener("click", (event) => {
      const button = (event.target as Element).closest<HTMLButtonElement>(".peer-remove");
      if (button !== null) void this.remove(button);
      const revoke = (event.target as Element).closest<HTMLButtonElement>(".peer-revoke");
      if (revoke !== null) void this.revoke(revoke);
    });
    this.groupsEl.addEventListener("change", (event) => {
      const select = (event.target as Element).closest<HTMLSelectElement>(".peer-role");
      if (select !== null) void this.setRole(select);
    });
    this.panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        this.close();
      }
    });
  }

  get isOpen(): boolean {
    return !this.panel.hidden;
  }

  toggle(): void {
    if (this.isOpen) this.close();
    else this.open();
  }

  open(): void {
    this.panel.hidden = false;
    this.events.onToggle(true);
    this.draw(true);
    byId("peers-close", HTMLButtonElement).focus();
  }

  close(): void {
    if (this.panel.hidden) return;
    const hadFocus = this.panel.contains(document.activeElement);
    this.panel.hidden = true;
    this.removeProblem = null;
    this.showProblem();
    this.events.onToggle(false);
    if (hadFocus) byId("peers-button", HTMLButtonElement).focus();
  }

  /** New network status (or a failure to read it). */
  render(status: NetworkStatus | null, error: string | null): void {
    if (status !== null) this.latest = status;
    this.networkProblem = error ?? status?.problem ?? null;
    this.showProblem();
    if (this.isOpen) this.draw(false);
  }

  private showProblem(): void {
    const problem = this.removeProblem ?? this.networkProblem;
    this.problem.hidden = problem === null;
    this.problem.textContent = problem ?? "";
  }

  private draw(force: boolean): void {
    const status = this.latest;
    if (status === null) return;
    const key = JSON.stringify(status);
    if (!force && key === this.drawn) return;
    this.drawn = key;
    this.nodeId.textContent = status.node_id;

    // Keep focus on the same Remove button across a redraw.
    const focused = document.activeElement;
    const focusKey =
      focused instanceof HTMLElement && focused.classList.contains("peer-remove")
        ? `${focused.dataset.space}/${focused.dataset.nodeId}`
        : null;

    const now = Date.now();
    const list = groups(status.peers, (space, fallback) => this.events.spaceName(space, fallback));
    if (list.length === 0) {
      this.groupsEl.replaceChildren(
        h("p", { class: "peers-empty" }, "No other devices share a space with this one yet. Invite one from a space in the sidebar."),
      );
      return;
    }
    this.groupsEl.replaceChildren(
      ...list.map((group) =>
        h(
          "section",
          { class: "peer-group", attrs: { "data-space": group.space } },
          h("h3", {}, group.name),
          ...people(group.peers).map((person) =>
            h(
              "div",
              { class: "peer-person", attrs: { "data-person": person.person } },
              h("h4", { class: "peer-person-name" }, personLine(person.name, person.devices)),
              h("ul", { class: "peer-list" }, ...person.devices.map((p) => peerRow(p, now))),
            ),
          ),
        ),
      ),
    );
    if (focusKey !== null) {
      for (const button of this.groupsEl.querySelectorAll<HTMLButtonElement>(".peer-remove")) {
        if (`${button.dataset.space}/${button.dataset.nodeId}` === focusKey) button.focus();
      }
    }
  }

  private async setRole(select: HTMLSelectElement): Promise<void> {
    const space = select.dataset.space;
    const nodeId = select.dataset.nodeId;
    const peer = this.latest?.peers.find((p) => p.space === space && p.node_id === nodeId);
    if (peer === undefined) return;
    const role = select.value as Role;
    this.removeProblem = null;
    try {
      await this.events.onSetRole(peer.space, peer.node_id, role);
    } catch (err) {
      select.value = peer.role;
      this.removeProblem = `Could not make ${peer.name} ${ROLE_NAMES[role].toLowerCase()}: ${errorText(err)}`;
    }
    this.showProblem();
  }

  private async revoke(button: HTMLButtonElement): Promise<void> {
    const nodeId = button.dataset.nodeId;
    const peer = this.latest?.peers.find((p) => p.node_id === nodeId && p.yours);
    if (peer === undefined) return;
    const sure = await confirmAction(
      `Revoke ${peer.name}? It is removed from every space: it gets no further changes, and what it writes from now on is refused. Your other devices keep their access.`,
      "Revoke",
    );
    if (!sure) return;
    this.removeProblem = null;
    try {
      await this.events.onRemoveDevice(peer.node_id);
    } catch (err) {
      this.removeProblem = `Could not revoke ${peer.name}: ${errorText(err)}`;
    }
    this.showProblem();
  }

  private async remove(button: HTMLButtonElement): Promise<void> {
    const space = button.dataset.space;
    const nodeId = button.dataset.nodeId;
    const peer = this.latest?.peers.find((p) => p.space === space && p.node_id === nodeId);
    if (peer === undefined) return;
    const spaceName = this.events.spaceName(peer.space, peer.space_name);
    const sure = await confirmAction(
      `Remove ${peer.name} from ${spaceName}? It will get no further changes to this space's notes. What it already has stays on it.`,
      "Remove",
    );
    if (!sure) return;
    this.removeProblem = null;
    try {
      await this.events.onRemove(peer.space, peer.node_id);
    } catch (err) {
      this.removeProblem = `Could not remove ${peer.name}: ${errorText(err)}`;
    }
    this.showProblem();
  }
}
