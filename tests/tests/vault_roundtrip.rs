//! `peernotes export` then `peernotes import` into an empty data dir, driven through
//! the CLI as a user would: every note's text must come back byte for byte, whatever
//! its script, line endings or title.

use std::path::Path;
use std::process::Output;

use peernotes_sync::exit_code;
use peernotes_tests::{peernotes, run_with_stdin, stderr, stdout};

/// Notes whose text, title or file name is awkward, each with a label for messages.
fn awkward_notes() -> Vec<(&'static str, String)> {
    vec![
        (
            "accents",
            "Crème brûlée à la façon de Noël\nÇa coûte 5 €, señor.\n".into(),
        ),
        (
            "CJK",
            "会議メモ\n明日の予定：午前十時\n한국어 문장과 中文句子\n".into(),
        ),
        (
            "right-to-left",
            "שלום עולם\nمرحبا بالعالم\n\u{202b}embedded RTL\u{202c}\n".into(),
        ),
        (
            "emoji with ZWJ sequences",
            "👩\u{200d}👩\u{200d}👧\u{200d}👦 family\n🏳\u{fe0f}\u{200d}🌈 flag, 👍🏽 thumb, 1\u{fe0f}\u{20e3} keycap\n"
                .into(),
        ),
        ("CRLF", "Windows note\r\nsecond line\r\n\r\n".into()),
        (
            "mixed line endings",
            "unix line\nwindows line\r\nold mac line\rlast\n\r\n".into(),
        ),
        ("no trailing newline", "no newline at the end".into()),
        ("empty", String::new()),
        ("whitespace only", "  \n\t\n   ".into()),
        ("byte order mark", "\u{feff}# With a BOM\nbody\n".into()),
        ("same title, first", "Plans\nfirst body\n".into()),
        ("same title, second", "Plans\nsecond body\n".into()),
        ("title differing by case", "plans\nlower case\n".into()),
        ("title differing by case, upper", "# PLANS\nupper case\n".into()),
        ("slash in title", "a/b\nslash\n".into()),
        ("slash already sanitised", "a_b\nunderscore\n".into()),
        ("reserved device name", "con\nreserved on Windows\n".into()),
        ("reserved device name with ext", "LPT1.txt\nalso reserved\n".into()),
        ("question mark", "what?\nillegal on Windows\n".into()),
        ("hidden-looking", ".hidden\nleading dot\n".into()),
        ("trailing dots", "trailing dots...\nWindows strips them\n".into()),
        ("only dots", "..\nno name left\n".into()),
        ("300-char ASCII title", format!("{}\nlong\n", "x".repeat(300))),
        ("300-char accented title", format!("{}\nlong\n", "é".repeat(300))),
        (
            "control characters in title",
            "tab\there \u{7}bell \u{1b}[31mescape\u{1}\nbody\n".into(),
        ),
        ("Windows-illegal punctuation", "<a|b> \"c\" *d* e:f\\g\nx\n".into()),
    ]
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed with {:?}: {}",
        output.status.code(),
        stderr(output)
    );
}

/// Creates a note from `text` with `peernotes new --stdin` and returns its id.
fn create_note(data: &Path, text: &str) -> String {
    let mut cmd = peernotes(data);
    cmd.args(["new", "--stdin"]);
    let output = run_with_stdin(cmd, text.as_bytes());
    assert_success(&output, &format!("peernotes new --stdin {text:?}"));
    stdout(&output).trim().to_string()
}

fn run(data: &Path, args: &[&str]) -> Output {
    peernotes(data).args(args).output().expect("run peernotes")
}

fn run_ok(data: &Path, args: &[&str]) -> Output {
    let output = run(data, args);
    assert_success(&output, &format!("peernotes {args:?}"));
    output
}

/// Every note's id in `data` (with `--trash`, the trashed ones), via `list --json`.
fn note_ids(data: &Path, trash: bool) -> Vec<String> {
    let mut args = vec!["list", "--json"];
    if trash {
        args.push("--trash");
    }
    let output = run_ok(data, &args);
    let notes: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("list --json prints a JSON array");
    notes
        .iter()
        .map(|n| n["id"].as_str().expect("every note has an id").to_string())
        .collect()
}

/// The multiset of the texts of the notes not in the trash, as `show` prints them.
fn texts_in(data: &Path) -> Vec<Vec<u8>> {
    let mut texts: Vec<Vec<u8>> = note_ids(data, false)
        .iter()
        .map(|id| run_ok(data, &["show", id]).stdout)
        .collect();
    texts.sort();
    texts
}

fn sorted_bytes<'a>(texts: impl IntoIterator<Item = &'a String>) -> Vec<Vec<u8>> {
    let mut bytes: Vec<Vec<u8>> = texts.into_iter().map(|t| t.as_bytes().to_vec()).collect();
    bytes.sort();
    bytes
}

/// Explains which texts differ, readably, when a round trip loses something.
fn assert_same_texts(got: &[Vec<u8>], want: &[Vec<u8>]) {
    let missing: Vec<_> = want
        .iter()
        .filter(|t| !got.contains(t))
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|t| !want.contains(t))
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect();
    assert_eq!(
        got, want,
        "texts differ after the round trip;\nmissing: {missing:#?}\nunexpected: {extra:#?}"
    );
}

#[test]
fn every_awkward_note_round_trips_byte_for_byte_through_export_and_import() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, vault) = (
        tmp.path().join("A"),
        tmp.path().join("B"),
        tmp.path().join("vault"),
    );
    let notes = awkward_notes();
    for (_, text) in &notes {
        create_note(&a, text);
    }
    // The store itself keeps them exactly (so a failure below is the vault's).
    let want = sorted_bytes(notes.iter().map(|(_, t)| t));
    assert_same_texts(&texts_in(&a), &want);

    let exported = run_ok(&a, &["export", vault.to_str().unwrap()]);
    assert!(
        stderr(&exported).contains(&format!("Exported {} note(s)", notes.len())),
        "{}",
        stderr(&exported)
    );
    let files: Vec<_> = std::fs::read_dir(&vault)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files.len(),
        notes.len(),
        "one file per note, none overwritten: {files:?}"
    );
    let mut folded: Vec<String> = files.iter().map(|n| n.to_lowercase()).collect();
    folded.sort();
    folded.dedup();
    assert_eq!(
        folded.len(),
        files.len(),
        "two file names differ only by case, so they collide on macOS and Windows: {files:?}"
    );
    for name in &files {
        assert!(name.ends_with(".md"), "{name} is not a .md file");
        assert!(
            !name.starts_with('.'),
            "{name} is hidden, so import would skip it"
        );
        assert!(
            !name.contains(['/', '\\', ':', '*', '?', '"', '<', '>', '|'])
                && !name.chars().any(char::is_control),
            "{name:?} is not a legal file name everywhere"
        );
        assert!(name.len() <= 255, "{name} is too long for most filesystems");
    }

    let imported = run_ok(&b, &["import", vault.to_str().unwrap()]);
    assert!(
        stderr(&imported).contains(&format!("Imported {} note(s)", notes.len())),
        "{}",
        stderr(&imported)
    );
    assert_same_texts(&texts_in(&b), &want);
}

#[test]
fn a_trashed_note_is_exported_only_with_trash() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("A");
    let kept = "Kept\nstill wanted\n".to_string();
    let binned = "Binned\nthrown away, but not gone\n".to_string();
    create_note(&a, &kept);
    let binned_id = create_note(&a, &binned);
    run_ok(&a, &["rm", &binned_id]);
    assert_eq!(note_ids(&a, true), vec![binned_id.clone()]);

    let without = tmp.path().join("without-trash");
    run_ok(&a, &["export", without.to_str().unwrap()]);
    let b = tmp.path().join("B");
    run_ok(&b, &["import", without.to_str().unwrap()]);
    assert_same_texts(&texts_in(&b), &sorted_bytes([&kept]));

    let with = tmp.path().join("with-trash");
    run_ok(&a, &["export", "--trash", with.to_str().unwrap()]);
    let c = tmp.path().join("C");
    run_ok(&c, &["import", with.to_str().unwrap()]);
    assert_same_texts(&texts_in(&c), &sorted_bytes([&kept, &binned]));
}

#[test]
fn export_refuses_a_folder_that_is_not_empty_and_leaves_its_file_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("A");
    create_note(&a, "Plans\nwould collide\n");
    let vault = tmp.path().join("vault");
    std::fs::create_dir(&vault).unwrap();
    let existing = vault.join("Plans.md");
    std::fs::write(&existing, b"my own file\n").unwrap();

    let output = run(&a, &["export", vault.to_str().unwrap()]);

    assert_eq!(
        output.status.code(),
        Some(exit_code::USAGE),
        "{}",
        stderr(&output)
    );
    let message = stderr(&output);
    assert!(message.contains("not empty"), "{message}");
    assert!(message.contains(vault.to_str().unwrap()), "{message}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"my own file\n");
    assert_eq!(
        std::fs::read_dir(&vault).unwrap().count(),
        1,
        "export added files to a folder it refused"
    );
}

#[test]
fn import_picks_up_nested_folders_and_skips_hidden_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault");
    let files: &[(&str, &str)] = &[
        ("Top.md", "Top\nat the root\n"),
        ("Projects/2024/Deep.md", "Deep\nthree levels down\n"),
        ("Projects/Shouting.MD", "Shouting\nupper-case extension\n"),
        (".obsidian/workspace.md", "Obsidian settings, not a note\n"),
        (".trash/Old.md", "Obsidian's trash, not a note\n"),
        (".dotfile.md", "a hidden file\n"),
        ("Projects/readme.txt", "not Markdown\n"),
    ];
    for (path, text) in files {
        let path = vault.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let b = tmp.path().join("B");

    let output = run_ok(&b, &["import", vault.to_str().unwrap()]);

    assert!(
        stderr(&output).contains("Imported 3 note(s)"),
        "{}",
        stderr(&output)
    );
    let want = [
        "Top\nat the root\n".to_string(),
        "Deep\nthree levels down\n".to_string(),
        "Shouting\nupper-case extension\n".to_string(),
    ];
    assert_same_texts(&texts_in(&b), &sorted_bytes(&want));
}
