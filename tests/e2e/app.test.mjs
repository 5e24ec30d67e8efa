// End-to-end: the window lists notes made with the CLI and opens the one
// clicked, text exact; then the note is edited in the window, survives a
// restart, is found by search, and goes to the trash and back (undo and the
// Trash view). Real app binary, real store, WebDriver under Xvfb:
//
//   PEERNOTES_APP=/abs/debug/peernotes-app PEERNOTES_CLI=/abs/debug/peernotes \
//     xvfb-run -a -s '-screen 0 1280x800x24' node --test --test-concurrency=1 tests/e2e/

import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";

import { AppUnderTest, KEYS, cli, requireBinary, scenario, sleep, waitFor } from "./lib.mjs";

const TIMEOUT_MS = 240_000;

/** The notes the CLI creates; titles are their first lines. */
const NOTES = [
  {
    title: "Weekly sync — 14 March",
    text: "Weekly sync — 14 March\n\nAttendees: Ana, Bo, Chidi\n\n## Decisions\n- Ship the note list first\n- Pairing review on Thursday\n    indented four spaces\n\ttabbed line",
  },
  {
    title: "Zoë's café list 🍰☕",
    text: "Zoë's café list 🍰☕\nCroissants × 12\nFlat white — oat milk\n日本語のメモ",
  },
  {
    title: "Release checklist",
    text: "Release checklist\n1. Tag v0.1.0\n2. Build the app\n3. Smoke test on a clean machine",
  },
];

async function listedIds(driver) {
  const items = await driver.findAll("#note-list .note-item");
  const ids = [];
  for (const item of items) ids.push(await driver.attribute(item, "data-note-id"));
  return ids;
}

test("notes from the CLI open exactly; typed notes survive a restart, are found, trashed and restored", { timeout: TIMEOUT_MS }, async () => {
  const peernotes = requireBinary("PEERNOTES_CLI");
  const apps = [];
  await scenario("editing", apps, async (root) => {
    const dataDir = path.join(root, "data");
    const ids = NOTES.map((note) => cli(peernotes, dataDir, ["new", "--stdin"], note.text).trim().split(/\s+/).pop());

    const app = await AppUnderTest.start("editing", root, dataDir);
    apps.push(app);
    const d = app.driver;

    // 1. The list shows the CLI's notes; clicking one opens its exact text.
    await waitFor("three notes in #note-list", async () => (await listedIds(d)).length === NOTES.length);
    const titles = [];
    for (const item of await d.findAll("#note-list .note-item")) titles.push((await d.text(await d.findIn(item, ".note-title"))).trim());
    assert.deepEqual([...titles].sort(), NOTES.map((n) => n.title).sort(), "the list shows each note's title");
    const pick = 1;
    await d.click(await d.find(`.note-item[data-note-id="${ids[pick]}"]`));
    await app.waitEditable(ids[pick]);
    assert.equal(await app.editorText(), NOTES[pick].text, "the editor shows the clicked note's text, whitespace and emoji intact");
    await app.screenshot("app.png");

    // 2. A new note, typed in the window, reaches the store within moments.
    await d.click(await d.find("#new-note"));
    const newId = await waitFor("a new note open in the editor", () =>
      d.execute(
        "const e = document.getElementById('editor'); return e.dataset.state === 'editable' && e.dataset.noteId !== arguments[0] ? e.dataset.noteId : false;",
        ids[pick],
      ),
    );
    // Enter after a list item continues the list ("- "), so the second item
    // is typed without its dash. (This once lost the space: CodeMirror's own
    // styles were blocked by the CSP.)
    await app.type(`Shopping list${KEYS.enter}- milk${KEYS.enter}eggs`);
    const typed = "Shopping list\n- milk\n- eggs";
    await waitFor("the editor to hold the typed text", async () => (await app.editorText()) === typed);
    await waitFor("the list to show the new title", async () => {
      const item = await d.find(`.note-item[data-note-id="${newId}"] .note-title`);
      return (await d.text(item)).trim() === "Shopping list";
    });
    await app.screenshot("editing.png");

    // 3. Restart: the text is there (the store has it even before the window opens).
    await app.restart();
    assert.equal(cli(peernotes, dataDir, ["show", newId]), `${typed}`, "the CLI reads the typed text from the store");
    await waitFor("the new note in the list after the restart", async () => (await listedIds(d)).includes(newId));
    await d.click(await d.find(`.note-item[data-note-id="${newId}"]`));
    await app.waitEditable(newId);
    assert.equal(await app.editorText(), typed, "the typed text survived the restart");

    // 4. Search finds it.
    const search = await d.find("#search");
    await d.click(search);
    await d.sendKeys(search, "eggs");
    await waitFor("search to find the note", async () => (await listedIds(d)).includes(newId) && (await listedIds(d)).length === 1);
    await d.sendKeys(search, KEYS.escape);
    await waitFor("the full list back after Esc", async () => (await listedIds(d)).length === NOTES.length + 1);

    // 5. Trash with the keyboard, undo from the toast.
    await d.click(await d.find(`.note-item[data-note-id="${newId}"]`));
    await app.waitEditable(newId);
    await d.chord([KEYS.control, KEYS.delete]);
    await waitFor("the note to leave the list", async () => !(await listedIds(d)).includes(newId));
    await d.click(await d.find("#toast-undo"));
    await waitFor("undo to bring it back", async () => (await listedIds(d)).includes(newId));

    // 6. Trash again, then restore it from the Trash view.
    await d.click(await d.find(`.note-item[data-note-id="${newId}"]`));
    await app.waitEditable(newId);
    await d.chord([KEYS.control, KEYS.delete]);
    await waitFor("the note to leave the list again", async () => !(await listedIds(d)).includes(newId));
    await d.click(await d.find("#trash-view"));
    await waitFor("the Trash view to list it", async () => (await listedIds(d)).includes(newId));
    await app.screenshot("trash.png");
    await d.click(await d.find(`.note-item[data-note-id="${newId}"] .restore-button`));
    await waitFor("restore to empty the trash", async () => !(await listedIds(d)).includes(newId));
    assert.match(cli(peernotes, dataDir, ["list"]), /Shopping list/, "the restored note is listed by the CLI again");

    await sleep(100);
    assert.deepEqual(await app.pageErrors(), [], "the page reported no errors");
  });
});
