// End-to-end: the app on a full disk. Its data dir is on a small tmpfs this
// test mounts (needs root; CI runs as root). Typing goes on while saving
// fails; the window says so in its error banner, stays up, and still lists
// and searches what was saved; once space is freed, what was typed reaches
// the store without anyone asking and the banner goes.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from "node:fs";
import path from "node:path";

import { AppUnderTest, appProcesses, cli, requireBinary, scenario, waitFor } from "./lib.mjs";

const TIMEOUT_MS = 180_000;

/** Writes a file until the disk refuses another byte; returns its path. */
function fill(dir) {
  const filler = path.join(dir, "filler");
  const fd = openSync(filler, "w");
  for (const size of [1 << 20, 64 << 10, 4 << 10, 512]) {
    const block = Buffer.alloc(size, 0xab);
    try {
      for (;;) writeSync(fd, block);
    } catch (err) {
      if (err.code !== "ENOSPC") throw err;
    }
  }
  closeSync(fd);
  return filler;
}

test("on a full disk the window keeps the typing, says saving failed, and saves once space is freed", { timeout: TIMEOUT_MS }, async () => {
  const peernotes = requireBinary("PEERNOTES_CLI");
  const apps = [];
  await scenario("full-disk", apps, async (root) => {
    const disk = path.join(root, "disk");
    mkdirSync(disk);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", disk]);
    try {
      const dataDir = path.join(disk, "data");
      const id = cli(peernotes, dataDir, ["new", "--stdin"], "Saved before the disk filled\n").trim().split(/\s+/).pop();
      const app = await AppUnderTest.start("full-disk", root, dataDir);
      apps.push(app);
      const d = app.driver;
      await waitFor("the note in the list", async () => (await d.findAll(`.note-item[data-note-id="${id}"]`)).length === 1);
      await d.click(await d.find(`.note-item[data-note-id="${id}"]`));
      await app.waitEditable(id);

      const filler = fill(disk);
      await d.execute("document.getElementById('editor').editorSelect(arguments[0], arguments[0]);", "Saved before the disk filled\n".length);
      await app.type("typed while the disk was full");
      const typed = "Saved before the disk filled\ntyped while the disk was full";
      await waitFor("the editor to hold the typed text", async () => (await app.editorText()) === typed);
      const banner = await waitFor("the error banner to say saving failed", async () => {
        const text = await d.execute("const b = document.getElementById('editor-error'); return b && !b.hidden ? b.textContent : false;");
        return text && text.includes("Could not save to disk") ? text : false;
      });
      assert.match(banner, /full/, "the banner says the disk is full");
      assert.match(banner, /kept/, "the banner says the edits are kept");
      await app.screenshot("full-disk.png");
      // Reading goes on from what was saved: the list, spaces and status load.
      const page = await d.execute("return document.body.innerText;");
      assert.doesNotMatch(page, /Could not load|Status unavailable/, "reads fail on a full disk");
      assert.equal(appProcesses(dataDir).length, 1, "the app is still running");
      assert.equal(await app.editorText(), typed, "nothing typed was lost from the window");

      rmSync(filler);
      await waitFor("the typed text to reach the store once space was freed", async () =>
        cli(peernotes, dataDir, ["show", id]).trimEnd() === typed,
      );
      await waitFor("the banner to go once saving works again", () =>
        d.execute("return document.getElementById('editor-error').hidden;"),
      );
      assert.deepEqual(await app.pageErrors(), [], "the page reported no errors");
    } finally {
      execFileSync("umount", ["-l", disk]);
    }
  });
});
