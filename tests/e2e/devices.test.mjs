// A person's devices, driven through two real app windows: Ana's desktop
// links her laptop from the peers panel ("Link another device…"); the
// laptop's window joins with the ticket the dialog shows, takes her Private
// space (its own earlier note moves there and reaches the desktop) and her
// Team space. The desktop groups both devices under Ana; Revoke removes the
// laptop alone: its window says it was removed, and gets nothing more.

import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";

import { AppUnderTest, cli, requireBinary, scenario, waitFor } from "./lib.mjs";

const TIMEOUT_MS = 240_000;

test("link a second window's device as the same person, see its notes, revoke it", { timeout: TIMEOUT_MS }, async () => {
  const peernotes = requireBinary("PEERNOTES_CLI");
  const apps = [];
  await scenario("devices", apps, async (root) => {
    const dataA = path.join(root, "ana");
    const dataB = path.join(root, "laptop");
    const team = cli(peernotes, dataA, ["space", "create", "Team"]).trim();
    const plan = cli(peernotes, dataA, ["new", "--space", "Team", "--stdin"], "Plan\n").trim().split(/\s+/).pop();
    const diary = cli(peernotes, dataA, ["new", "--stdin"], "Diary\nonly mine\n").trim().split(/\s+/).pop();
    const jot = cli(peernotes, dataB, ["new", "--stdin"], "Jotted on the laptop\n").trim().split(/\s+/).pop();
    const laptopId = cli(peernotes, dataB, ["id"]).trim();
    const privateA = JSON.parse(cli(peernotes, dataA, ["space", "list", "--json"])).find((s) => s.private).id;

    const desktop = await AppUnderTest.start("ana", path.join(root, "ana-env"), dataA);
    apps.push(desktop);
    const laptop = await AppUnderTest.start("laptop", path.join(root, "laptop-env"), dataB);
    apps.push(laptop);
    const [a, b] = [desktop.driver, laptop.driver];
    for (const d of [a, b]) {
      await waitFor("sync to be running", async () => (await d.text(await d.find("#status-bar"))).includes("Online"));
    }

    // Ana links the laptop from the peers panel; the laptop's Join dialog
    // takes the ticket and says it is linked.
    await a.click(await a.find("#peers-button"));
    await a.click(await a.find("#link-device"));
    const ticket = await waitFor("a link ticket in the dialog", async () => {
      const value = await a.property(await a.find("#invite-ticket"), "value");
      return typeof value === "string" && value.startsWith("peernotes1") ? value : false;
    });
    const heading = await a.text(await a.find("#invite-heading"));
    assert.match(heading, /Link another of your devices/, heading);
    await desktop.screenshot("link-dialog.png");
    await b.click(await b.find("#join-button"));
    await b.sendKeys(await b.find("#join-input"), ticket);
    await b.sendKeys(await b.find("#join-name"), "laptop");
    await b.click(await b.find("#join-submit"));
    await waitFor("the laptop to say it is linked", async () => (await b.text(await b.find("#join-progress"))).includes("Linked"), 60_000);
    await laptop.screenshot("linked.png");

    // The laptop sees Ana's Private and shared notes; the desktop gets the
    // laptop's own earlier note, now in the Private space.
    await waitFor(
      "Ana's Private and Team notes in the laptop's window",
      async () =>
        (await b.findAll(`.space-item[data-space-id="${team}"]`)).length === 1 &&
        (await b.findAll(`.space-item[data-space-id="${privateA}"]`)).length === 1 &&
        (await b.findAll(`.note-item[data-note-id="${diary}"]`)).length === 1 &&
        (await b.findAll(`.note-item[data-note-id="${plan}"]`)).length === 1,
      60_000,
    );
    await waitFor("the laptop's own note in Ana's window", async () => (await a.findAll(`.note-item[data-note-id="${jot}"]`)).length === 1, 60_000);
    await laptop.screenshot("laptop-notes.png");

    // The desktop groups the laptop under Ana, with Revoke.
    if ((await a.findAll("#invite-dialog[open]")).length > 0) await a.click(await a.find("#invite-done"));
    const revoke = `#peers-panel .peer-revoke[data-node-id="${laptopId}"]`;
    await waitFor("the laptop, Ana's, in the peers panel", async () => {
      if ((await a.findAll("#peers-panel[hidden]")).length > 0) await a.click(await a.find("#peers-button"));
      return (await a.findAll(revoke)).length > 0;
    }, 60_000);
    const people = await a.execute("return [...document.querySelectorAll('#peers-panel .peer-person-name')].map((e) => e.textContent);");
    assert.ok(
      people.some((line) => line.includes("laptop")),
      `a person line names the laptop: ${JSON.stringify(people)}`,
    );
    await desktop.screenshot("linked-devices.png");

    // The laptop is lost: Revoke, confirmed. Its window says so.
    await a.click(await a.find(revoke));
    await waitFor("the confirmation", async () => (await a.findAll("#confirm-dialog[open]")).length === 1);
    await a.click(await a.find("#confirm-ok"));
    await waitFor("the laptop to leave the peers panel", async () => (await a.findAll(revoke)).length === 0, 30_000);
    for (const space of [privateA, team]) {
      await waitFor(
        "the laptop's window to show it was removed",
        async () => (await b.findAll(`.space-item[data-space-id="${space}"] .nav-button.removed`)).length === 1,
        60_000,
      );
    }
    const title = await b.property(await b.find(`.space-item[data-space-id="${team}"] .nav-button`), "title");
    assert.match(title, /You were removed from Team by/, title);

    // Nothing more reaches it: a note Ana writes afterwards stays with her.
    const after = cli(peernotes, dataA, ["new", "--space", "Team", "--stdin"], "After the loss\n").trim().split(/\s+/).pop();
    await waitFor("Ana's new note in her window", async () => (await a.findAll(`.note-item[data-note-id="${after}"]`)).length === 1);
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    assert.equal((await b.findAll(`.note-item[data-note-id="${after}"]`)).length, 0, "the revoked laptop got a later note");
    await laptop.screenshot("revoked.png");
    for (const app of [desktop, laptop]) assert.deepEqual(await app.pageErrors(), [], `${app.name}'s page reported no errors`);
  });
});
