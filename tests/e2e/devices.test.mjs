// A person's devices, driven through the real app: Ana's desktop window
// links her laptop from the peers panel ("Link another device…"); the laptop
// joins with the ticket the dialog shows (`peernotes join`), takes her
// Private space (its own earlier note moves there and reaches the window)
// and her Team space. The window groups both devices under Ana; Revoke
// removes the laptop alone, and the laptop is told.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";

import { AppUnderTest, appEnv, cli, requireBinary, scenario, waitFor } from "./lib.mjs";

const TIMEOUT_MS = 240_000;

test("link a laptop from the peers panel, see it grouped under its person, revoke it", { timeout: TIMEOUT_MS }, async () => {
  const peernotes = requireBinary("PEERNOTES_CLI");
  const apps = [];
  let laptopServe = null;
  try {
    await scenario("devices", apps, async (root) => {
      const dataA = path.join(root, "ana");
      const dataB = path.join(root, "laptop");
      const laptopEnv = appEnv(path.join(root, "laptop-env"), dataB);
      const team = cli(peernotes, dataA, ["space", "create", "Team"]).trim();
      const plan = cli(peernotes, dataA, ["new", "--space", "Team", "--stdin"], "Plan\n").trim().split(/\s+/).pop();
      const jot = cli(peernotes, dataB, ["new", "--stdin"], "Jotted on the laptop\n").trim().split(/\s+/).pop();
      const laptopId = cli(peernotes, dataB, ["id"]).trim();

      const app = await AppUnderTest.start("ana", root, dataA);
      apps.push(app);
      const d = app.driver;
      await waitFor("sync to be running", async () => (await d.text(await d.find("#status-bar"))).includes("Online"));

      // Ana links the laptop from the peers panel.
      await d.click(await d.find("#peers-button"));
      await d.click(await d.find("#link-device"));
      const ticket = await waitFor("a link ticket in the dialog", async () => {
        const value = await d.property(await d.find("#invite-ticket"), "value");
        return typeof value === "string" && value.startsWith("peernotes1") ? value : false;
      });
      const heading = await d.text(await d.find("#invite-dialog h2"));
      assert.match(heading, /Link another of your devices/, heading);
      await app.screenshot("link-dialog.png");
      const joined = cli(peernotes, dataB, ["join", ticket, "--name", "laptop"], undefined, laptopEnv);
      assert.match(joined.trim(), /^[0-9a-f]{32}$/, `the laptop joined a space (${joined})`);
      await waitFor("the dialog to say the laptop is linked", async () => (await d.text(await d.find("#invite-status"))).includes("laptop"));
      if ((await d.findAll("#invite-dialog[open]")).length > 0) await d.click(await d.find("#invite-done"));

      // The laptop stays online; its own note and Ana's spaces meet.
      laptopServe = spawn(peernotes, ["--data-dir", dataB, "serve"], { env: laptopEnv, stdio: ["ignore", "ignore", "ignore"] });
      await waitFor(
        "the laptop's own earlier note in Ana's window",
        async () => (await d.findAll(`.note-item[data-note-id="${jot}"]`)).length === 1,
        60_000,
      );
      await waitFor(
        "the laptop to hold Team and its note",
        async () =>
          cli(peernotes, dataB, ["space", "list"], undefined, laptopEnv).includes(team.slice(0, 8)) &&
          cli(peernotes, dataB, ["list"], undefined, laptopEnv).includes(plan.slice(0, 8)),
        60_000,
      );

      // The peers panel groups the laptop under Ana, with Revoke.
      if ((await d.findAll("#peers-panel:not([hidden]) #link-device")).length === 0) await d.click(await d.find("#peers-button"));
      const revoke = `#peers-panel .peer-revoke[data-node-id="${laptopId}"]`;
      await waitFor("the laptop, Ana's, in the peers panel", async () => (await d.findAll(revoke)).length > 0, 60_000);
      const people = await d.execute("return [...document.querySelectorAll('#peers-panel .peer-person-name')].map((e) => e.textContent);");
      assert.ok(
        people.some((line) => line.includes("laptop")),
        `a person line names the laptop: ${JSON.stringify(people)}`,
      );
      await app.screenshot("linked-devices.png");

      // The laptop is lost: Revoke, confirmed.
      await d.click(await d.find(revoke));
      await waitFor("the confirmation", async () => (await d.findAll("#confirm-dialog[open]")).length === 1);
      await d.click(await d.find("#confirm-ok"));
      await waitFor("the laptop to leave the peers panel", async () => (await d.findAll(revoke)).length === 0, 30_000);
      await waitFor(
        "the laptop to be told it was removed",
        async () => /removed by/.test(cli(peernotes, dataB, ["space", "list"], undefined, laptopEnv)),
        60_000,
      );
      const members = cli(peernotes, dataA, ["space", "members", "Team"], undefined, appEnv(path.join(root, "ana-env"), dataA));
      assert.ok(!members.includes(laptopId), `the laptop is no member of Team any more: ${members}`);
      await app.screenshot("revoked.png");
      assert.deepEqual(await app.pageErrors(), [], "the page reported no errors");
    });
  } finally {
    if (laptopServe && laptopServe.exitCode === null) laptopServe.kill("SIGTERM");
  }
});
