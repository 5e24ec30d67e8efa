// The two sides of pairing a device into a space, each a modal `<dialog>`:
// `InviteDialog` (QR code, ticket with Copy, short code, expiry countdown,
// progress from `pairing` events; closing it withdraws the invitation) and
// `JoinDialog` (a ticket or code, an optional device name, progress and
// errors). main.ts routes `pairing` events to whichever is open.

import { byId, copyWithFeedback, errorText } from "./dom";
import { cancelInvite, invite, inviteDevice, join, type Invitation, type Joined, type PairingProgress, type Role, type SpaceId } from "./ipc";

/** How long an invitation lasts. */
const INVITE_MINUTES = 10;

const LEAD_SPACE =
  "On the other device, choose Join… and type the code, or paste the ticket. Scan the QR code from a phone.";
const LEAD_DEVICE =
  "On your other device, choose Join… and type the code, or paste the ticket. It becomes one more of your devices: it gets your Private notes and every space you are in.";

function countdown(ms: number): string {
  const seconds = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

export class InviteDialog {
  private readonly dialog = byId("invite-dialog", HTMLDialogElement);
  private readonly heading = byId("invite-heading", HTMLHeadingElement);
  private readonly qr = byId("invite-qr", HTMLDivElement);
  private readonly code = byId("invite-code", HTMLDivElement);
  private readonly ticketField = byId("invite-ticket-field", HTMLDivElement);
  private readonly ticket = byId("invite-ticket", HTMLInputElement);
  private readonly copy = byId("copy-ticket", HTMLButtonElement);
  private readonly expiry = byId("invite-expiry", HTMLParagraphElement);
  private readonly status = byId("invite-status", HTMLParagraphElement);
  private readonly error = byId("invite-error", HTMLParagraphElement);
  private readonly renew = byId("invite-renew", HTMLButtonElement);
  private readonly role = byId("invite-role", HTMLSelectElement);
  private readonly roleField = byId("invite-role-field", HTMLDivElement);
  private readonly lead = byId("invite-lead", HTMLParagraphElement);
  /** What the invitation is for: a space, or linking one more of this person's devices. */
  private target: { kind: "space"; id: SpaceId; name: string } | { kind: "device" } | null = null;
  /** Bumped on every open, renew and close, so a late `invite()` answer is dropped. */
  private generation = 0;
  private expiresAt = 0;
  private tick = 0;
  private closeTimer = 0;

  constructor(private readonly onPaired: (space: SpaceId) => void) {
    this.copy.addEventListener("click", () => void copyWithFeedback(this.copy, this.ticket.value));
    this.ticket.addEventListener("focus", () => this.ticket.select());
    this.renew.addEventListener("click", () => void this.start());
    // Another role is another invitation.
    this.role.addEventListener("change", () => void this.start());
    byId("invite-done", HTMLButtonElement).addEventListener("click", () => this.dialog.close());
    this.dialog.addEventListener("close", () => this.onClose());
  }

  get isOpen(): boolean {
    return this.dialog.open;
  }

  /** Opens the dialog and starts inviting into `space`. */
  open(space: SpaceId, name: string): void {
    if (this.dialog.open) return;
    this.target = { kind: "space", id: space, name };
    this.role.value = "editor";
    this.roleField.hidden = false;
    this.heading.textContent = `Invite a device to ${name}`;
    this.lead.textContent = LEAD_SPACE;
    this.dialog.showModal();
    void this.start();
  }

  /** Opens the dialog and starts an invitation that links one more of this person's devices. */
  openLink(): void {
    if (this.dialog.open) return;
    this.target = { kind: "device" };
    this.roleField.hidden = true;
    this.heading.textContent = "Link another of your devices";
    this.lead.textContent = LEAD_DEVICE;
    this.dialog.showModal();
    void this.start();
  }

  private async start(): Promise<void> {
    const target = this.target;
    if (target === null) return;
    const generation = ++this.generation;
    this.reset();
    this.status.textContent = "Creating an invitation…";
    let invitation: Invitation;
    try {
      invitation =
        target.kind === "space"
          ? await invite(target.id, INVITE_MINUTES, this.role.value as Role)
          : await inviteDevice(INVITE_MINUTES);
    } catch (err) {
      if (generation !== this.generation) return;
      this.status.textContent = "";
      this.error.textContent = errorText(err);
      return;
    }
    if (generation !== this.generation) {
      // Closed (or renewed) while the invitation was being made: withdraw it.
      if (!this.dialog.open) void cancelInvite().catch(() => undefined);
      return;
    }
    this.show(invitation);
  }

  private reset(): void {
    window.clearInterval(this.tick);
    window.clearTimeout(this.closeTimer);
    this.qr.replaceChildren();
    this.qr.hidden = true;
    this.code.textContent = "";
    this.code.classList.remove("unavailable");
    this.ticket.value = "";
    this.ticketField.hidden = true;
    this.expiry.textContent = "";
    this.status.textContent = "";
    this.error.textContent = "";
    this.renew.hidden = true;
  }

  private show(invitation: Invitation): void {
    // The SVG is our own backend's rendering of the ticket, not user text.
    if (invitation.qr_svg !== null) {
      this.qr.innerHTML = invitation.qr_svg;
      this.qr.hidden = false;
    }
    if (invitation.code !== null) {
      this.code.textContent = invitation.code;
    } else {
      this.code.textContent = invitation.code_unavailable ?? "No short code for this invitation.";
      this.code.classList.add("unavailable");
    }
    if (invitation.ticket !== null) {
      this.ticket.value = invitation.ticket;
      this.ticketField.hidden = false;
    }
    this.status.textContent = "Waiting for the other device…";
    this.expiresAt = invitation.expires_at;
    this.updateExpiry();
    this.tick = window.setInterval(() => this.updateExpiry(), 1000);
  }

  private updateExpiry(): void {
    const left = this.expiresAt - Date.now();
    if (left > 0) {
      this.expiry.textContent = `Expires in ${countdown(left)}`;
      return;
    }
    window.clearInterval(this.tick);
    this.expiry.textContent = "This invitation has expired.";
    this.status.textContent = "";
    this.renew.hidden = false;
  }

  /** A `pairing` event while this dialog is open. */
  handle(progress: PairingProgress): void {
    switch (progress.step) {
      case "joiner-arrived":
        this.error.textContent = "";
        this.status.textContent = "A device is joining…";
        return;
      case "exchanging":
        this.status.textContent = "Checking the code…";
        return;
      case "paired": {
        window.clearInterval(this.tick);
        this.expiry.textContent = "";
        this.status.textContent = `Paired ✓ ${progress.name || progress.member.slice(0, 8)}`;
        this.onPaired(progress.space);
        const generation = this.generation;
        this.closeTimer = window.setTimeout(() => {
          if (generation === this.generation) this.dialog.close();
        }, 1500);
        return;
      }
      case "failed":
        this.status.textContent = "Waiting for the other device…";
        this.error.textContent = progress.reason;
        return;
      case "looking-for-inviter":
        return;
    }
  }

  private onClose(): void {
    this.generation++;
    window.clearInterval(this.tick);
    window.clearTimeout(this.closeTimer);
    this.target = null;
    void cancelInvite().catch(() => undefined);
  }
}

const TICKET = /^peernotes1/i;

export class JoinDialog {
  private readonly dialog = byId("join-dialog", HTMLDialogElement);
  private readonly form = byId("join-form", HTMLFormElement);
  private readonly input = byId("join-input", HTMLInputElement);
  private readonly name = byId("join-name", HTMLInputElement);
  private readonly submit = byId("join-submit", HTMLButtonElement);
  private readonly progress = byId("join-progress", HTMLParagraphElement);
  private readonly error = byId("join-error", HTMLParagraphElement);
  private running = false;
  private byCode = false;
  private closeTimer = 0;

  constructor(private readonly onJoined: (joined: Joined) => void) {
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.run();
    });
    byId("join-cancel", HTMLButtonElement).addEventListener("click", () => this.dialog.close());
    this.input.addEventListener("input", () => {
      this.input.removeAttribute("aria-invalid");
      if (!this.running) this.error.textContent = "";
    });
    this.dialog.addEventListener("close", () => window.clearTimeout(this.closeTimer));
  }

  get isOpen(): boolean {
    return this.dialog.open;
  }

  open(): void {
    if (this.dialog.open) return;
    if (!this.running) {
      this.input.value = "";
      this.progress.textContent = "";
      this.error.textContent = "";
      this.input.removeAttribute("aria-invalid");
    }
    this.dialog.showModal();
    this.input.focus();
  }

  private async run(): Promise<void> {
    if (this.running) return;
    const invitation = this.input.value.trim();
    if (invitation === "") {
      this.error.textContent = "Paste a ticket or type a code like 7-amber-falcon.";
      this.input.setAttribute("aria-invalid", "true");
      this.input.focus();
      return;
    }
    const name = this.name.value.trim();
    this.byCode = !TICKET.test(invitation);
    this.setRunning(true);
    this.error.textContent = "";
    this.progress.textContent = this.byCode ? "Looking for the inviter on this network…" : "Connecting to the inviter…";
    try {
      const joined = await join(invitation, name === "" ? null : name);
      this.progress.textContent = joined.linked
        ? "Linked ✓ This is now one more of your devices; your notes are arriving."
        : `Joined ${joined.space_name}`;
      this.onJoined(joined);
      this.closeTimer = window.setTimeout(() => this.dialog.close(), 1500);
    } catch (err) {
      this.progress.textContent = "";
      this.error.textContent = errorText(err);
      this.input.setAttribute("aria-invalid", "true");
      if (this.dialog.open) this.input.focus();
    } finally {
      this.setRunning(false);
    }
  }

  private setRunning(running: boolean): void {
    this.running = running;
    this.submit.disabled = running;
    this.input.readOnly = running;
    this.name.readOnly = running;
    this.submit.textContent = running ? "Joining…" : "Join";
  }

  /** A `pairing` event while a join is running. */
  handle(progress: PairingProgress): void {
    if (!this.running) return;
    switch (progress.step) {
      case "looking-for-inviter":
        this.progress.textContent = "Looking for the inviter on this network…";
        return;
      case "exchanging":
        this.progress.textContent = this.byCode ? "Proving the code…" : "Checking the ticket…";
        return;
      case "failed":
        this.error.textContent = progress.reason;
        return;
      case "paired":
      case "joiner-arrived":
        return;
    }
  }

  get isRunning(): boolean {
    return this.running;
  }
}
