// End-to-end: the app pairs another device through its own invite dialog, then
// text typed in the window reaches the other device, the other device's text
// and cursor (with its member name) appear in the open editor, and edits made
// on both sides while apart merge into the open editor when they meet again.
// The other device is a `live-peer` (the sync Node and transport with a line
// protocol on stdin, built with the tests) after a `peernotes join` — both on
// loopback, with mDNS and relays off.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import path from "node:path";

import { AppUnderTest, appEnv, cli, requireBinary, scenario, waitFor } from "./lib.mjs";

const TIMEOUT_MS = 240_000;

/** The other device: `live-peer` driven line by line. */
class LivePeer {
  static async start(root, dataDir) {
    const child = spawn(requireBinary("PEERNOTES_LIVE_PEER"), [dataDir], {
      env: appEnv(path.join(root, "peer-env"), dataDir),
      stdio: ["pipe", "pipe", "inherit"],
    });
    const peer = new LivePeer(child);
    const ready = await peer.line();
    assert.match(ready, /^ready /, `live-peer said ${ready}`);
    return peer;
  }

  constructor(child) {
    this.child = child;
    this.lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  }

  async line() {
    const next = await this.lines.next();
    if (next.done) throw new Error("live-peer exited");
    return next.value;
  }

  async ask(command) {
    this.child.stdin.write(`${command}\n`);
    return this.line();
  }

  async text(note) {
    const line = await this.ask(`text ${note}`);
    return JSON.parse(line.replace(/^text /, ""));
  }

  async quit() {
    if (this.child.exitCode !== null) return;
    this.child.stdin.write("quit\n");
    await new Promise((resolve) => this.child.once("exit", resolve));
  }
}

test("pair through the invite dialog, sync live with cursors, merge after being apart", { timeout: TIMEOUT_MS }, async () => {
  const peernotes = requireBinary("PEERNOTES_CLI");
  const apps = [];
  let peer = null;
  try {
    await scenario("sync", apps, async (root) => {
      const dataA = path.join(root, "alice");
      const dataB = path.join(root, "bob");
      const space = cli(peernotes, dataA, ["space", "create", "Team"]).trim();
      const note = cli(peernotes, dataA, ["new", "--space", "Team", "--stdin"], "Plan\n").trim().split(/\s+/).pop();

      const app = await AppUnderTest.start("alice", root, dataA);
      apps.push(app);
      const d = app.driver;

      // Invite from the app's dialog; Bob joins with the ticket it shows.
      await waitFor("the Team space in the sidebar", async () => (await d.findAll(`.space-item[data-space-id="${space}"]`)).length === 1);
      await d.click(await d.find(`.space-item[data-space-id="${space}"]`));
      await waitFor("sync to be running", async () => (await d.findAll("#invite-button")).length === 1);
      const ticket = await waitFor("a ticket in the invite dialog", async () => {
        if ((await d.findAll("#invite-dialog[open]")).length === 0) await d.click(await d.find("#invite-button"));
        const value = await d.property(await d.find("#invite-ticket"), "value");
        return typeof value === "string" && value.startsWith("peernotes1") ? value : false;
      });
      await app.screenshot("pairing.png");
      const joined = cli(peernotes, dataB, ["join", ticket, "--name", "Bob"], undefined, appEnv(path.join(root, "bob-env"), dataB));
      assert.equal(joined.trim(), space, "Bob joined the Team space");
      assert.equal(cli(peernotes, dataB, ["show", note]), "Plan\n", "Bob has the note");
      await waitFor("the invite dialog to say Bob paired", async () => (await d.text(await d.find("#invite-status"))).includes("Bob"));
      if ((await d.findAll("#invite-dialog[open]")).length > 0) await d.click(await d.find("#invite-done"));

      // Live: Bob's device runs; Alice types; Bob types and points his cursor.
      peer = await LivePeer.start(root, dataB);
      await d.click(await d.find(`.note-item[data-note-id="${note}"]`));
      await app.waitEditable(note);
      await waitFor("the editor to take focus", () =>
        d.execute("const c = document.querySelector('#editor .cm-content'); if (!c) return false; c.focus(); return document.activeElement === c;"),
      );
      await app.type("\uE010- from Alice"); // End, then type
      await waitFor("Alice's typing to reach Bob", async () => (await peer.text(note)).includes("- from Alice"));
      assert.equal(await peer.ask(`append ${note} - from Bob`), "ok");
      await waitFor("Bob's line in Alice's open editor", async () => ((await app.editorText()) ?? "").includes("- from Bob"));
      assert.equal(await peer.ask(`cursor ${note} 2`), "ok");
      await waitFor("Bob's cursor, with his name, in Alice's editor", async () => {
        const names = await d.execute("return [...document.querySelectorAll('#editor .remote-cursor-name')].map((e) => e.textContent);");
        return names.includes("Bob");
      });
      await app.screenshot("live-sync.png");

      // Alice owns Team: the peers panel shows Bob as an editor with a role
      // menu; making him a viewer is what every device then computes.
      await d.click(await d.find("#peers-button"));
      const roleMenu = "#peers-panel select.peer-role";
      await waitFor("Bob's role menu in the peers panel", async () => (await d.findAll(roleMenu)).length === 1);
      assert.equal(await d.property(await d.find(roleMenu), "value"), "editor");
      const setRole = (role) =>
        d.execute(
          `const s = document.querySelector(${JSON.stringify(roleMenu)}); s.value = ${JSON.stringify(role)}; s.dispatchEvent(new Event("change", { bubbles: true }));`,
        );
      await setRole("viewer");
      await waitFor("Bob to be a viewer", async () => /\bviewer\s+Bob\b/.test(cli(peernotes, dataA, ["space", "members", "Team"])));
      await app.screenshot("peers-roles.png");
      await setRole("editor");
      await waitFor("Bob to be an editor again", async () => /\beditor\s+Bob\b/.test(cli(peernotes, dataA, ["space", "members", "Team"])));
      await d.click(await d.find("#peers-close"));

      // Apart: Bob's device stops; both edit; it comes back.
      await peer.quit();
      peer = null;
      await waitFor("Bob's cursor to vanish when he leaves", async () => {
        const n = await d.execute("return document.querySelectorAll('#editor .remote-cursor').length;");
        return n === 0;
      });
      await app.type(" (offline A)");
      const bobText = cli(peernotes, dataB, ["show", note]);
      const edited = `${bobText}offline B\n`;
      cli(peernotes, dataB, ["edit", "--stdin", note], edited);
      peer = await LivePeer.start(root, dataB);
      await waitFor("the merged text in Alice's open editor", async () => {
        const text = (await app.editorText()) ?? "";
        return text.includes("(offline A)") && text.includes("offline B");
      }, 60_000);
      await waitFor("the same text on Bob's device", async () => (await peer.text(note)) === (await app.editorText()), 60_000);
      assert.deepEqual(await app.pageErrors(), [], "the page reported no errors");
    });
  } finally {
    if (peer) await peer.quit();
  }
});

test("join a space from the app's Join dialog; bad input gets a clear error", { timeout: TIMEOUT_MS }, async () => {
  const peernotes = requireBinary("PEERNOTES_CLI");
  const apps = [];
  let inviter = null;
  try {
    await scenario("join", apps, async (root) => {
      const dataA = path.join(root, "dana");
      const dataB = path.join(root, "carol");
      const space = cli(peernotes, dataA, ["space", "create", "Book club"]).trim();
      const note = cli(peernotes, dataA, ["new", "--space", "Book club", "--stdin"], "Chapter 1 notes\n").trim().split(/\s+/).pop();

      const app = await AppUnderTest.start("carol", root, dataB);
      apps.push(app);
      const d = app.driver;
      await waitFor("sync to be running", async () => (await d.text(await d.find("#status-bar"))).includes("Online"));
      await d.click(await d.find("#join-button"));
      const input = await d.find("#join-input");

      // A damaged ticket and a misspelt code are refused, saying why.
      await d.sendKeys(input, "peernotes1thisisnotaticket");
      await d.click(await d.find("#join-submit"));
      await waitFor("an error for the damaged ticket", async () => (await d.text(await d.find("#join-error"))).includes("damaged"));
      await d.call("POST", d.s(`/element/${input}/clear`), {});
      await d.sendKeys(input, "7-amber-falcoon");
      await d.click(await d.find("#join-submit"));
      await waitFor("an error for the misspelt code", async () => (await d.text(await d.find("#join-error"))).includes("falcoon"));

      // A real ticket from Dana's `peernotes invite`.
      inviter = spawn(peernotes, ["--data-dir", dataA, "invite", "--space", "Book club"], {
        env: appEnv(path.join(root, "dana-env"), dataA),
        stdio: ["ignore", "pipe", "ignore"],
      });
      const ticket = await new Promise((resolve, reject) => {
        createInterface({ input: inviter.stdout }).on("line", (l) => l.startsWith("ticket ") && resolve(l.slice(7)));
        inviter.once("exit", (code) => reject(new Error(`invite exited ${code}`)));
      });
      await d.call("POST", d.s(`/element/${input}/clear`), {});
      await d.sendKeys(input, ticket);
      await d.sendKeys(await d.find("#join-name"), "Carol");
      await d.click(await d.find("#join-submit"));
      await waitFor("the Book club space in the sidebar", async () => (await d.findAll(`.space-item[data-space-id="${space}"]`)).length === 1, 60_000);
      await waitFor("Dana's note in Carol's list", async () => (await d.findAll(`.note-item[data-note-id="${note}"]`)).length === 1, 60_000);
      await app.screenshot("joined.png");
      const exited = await new Promise((resolve) => (inviter.exitCode !== null ? resolve(inviter.exitCode) : inviter.once("exit", resolve)));
      inviter = null;
      assert.equal(exited, 0, "Dana's invite ended successfully");
      assert.match(cli(peernotes, dataA, ["space", "members", "Book club"]), /Carol/, "Dana's device lists Carol as a member");

      // Dana removes Carol, then comes online: Carol's window is told who
      // removed her, and the space no longer syncs.
      const carolId = cli(peernotes, dataB, ["id"]).trim();
      assert.match(carolId, /^[0-9a-f]{64}$/, `Carol's node id (${carolId})`);
      cli(peernotes, dataA, ["space", "remove-member", "Book club", carolId]);
      inviter = spawn(peernotes, ["--data-dir", dataA, "serve"], {
        env: appEnv(path.join(root, "dana-env"), dataA),
        stdio: ["ignore", "ignore", "ignore"],
      });
      await waitFor(
        "Carol's window to show that Dana removed her",
        async () => (await d.findAll(`.space-item[data-space-id="${space}"] .nav-button.removed`)).length === 1,
        60_000,
      );
      const title = await d.property(await d.find(`.space-item[data-space-id="${space}"] .nav-button`), "title");
      assert.match(title, /You were removed from Book club by/, title);
      await app.screenshot("removed.png");
      assert.deepEqual(await app.pageErrors(), [], "the page reported no errors");
    });
  } finally {
    if (inviter && inviter.exitCode === null) inviter.kill("SIGTERM");
  }
});
