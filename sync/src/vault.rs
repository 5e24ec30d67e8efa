//! Markdown folders in and out: `peernotes export` writes every note as a `.md`
//! file, `peernotes import` reads a folder of them (an Obsidian vault is the model).
//!
//! A note's text is written and read byte for byte (CRLF, BOM and all). File names
//! come from titles, made legal on every common filesystem and unique
//! case-insensitively. Import checks every file before it creates any note, so a
//! bad file means nothing was imported, not half a vault.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::node::{ListFilter, Node};
use crate::note::NoteId;

/// Longest file name stem written, in bytes (leaves room for " (999).md").
const MAX_STEM_BYTES: usize = 120;

#[derive(Debug, Default)]
pub struct ExportReport {
    pub files: Vec<(NoteId, PathBuf)>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ImportReport {
    pub imported: Vec<(PathBuf, NoteId)>,
    /// Files left out with `skip_invalid`, and why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Writes every note (and, with `include_trash`, trashed ones) into `dir`, which
/// must be empty or not exist yet: export never overwrites a file.
pub fn export(node: &Node, dir: &Path, include_trash: bool) -> Result<ExportReport> {
    let not_empty = fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if not_empty {
        return Err(Error::Invalid(format!(
            "{} is not empty; export into a new or empty folder so no file is overwritten",
            dir.display()
        )));
    }
    // Read the notes first: a store that cannot be read leaves no empty folder.
    let mut notes = node.list(ListFilter::Active)?;
    if include_trash {
        notes.extend(node.list(ListFilter::Trash)?);
    }
    fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    notes.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let mut used = HashSet::new();
    let mut report = ExportReport::default();
    for summary in notes {
        let text = node.get(&summary.id)?.text;
        let path = dir.join(file_name_for(&summary.title, &mut used));
        let mut file = fs::File::create_new(&path)
            .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        report.files.push((summary.id, path));
    }
    Ok(report)
}

/// Creates a note from every `.md` file under `dir` (hidden files and folders,
/// such as `.obsidian/`, are skipped). Every file is read and checked first; if any
/// is not UTF-8 text, nothing is imported unless `skip_invalid`.
pub fn import(node: &Node, dir: &Path, skip_invalid: bool) -> Result<ImportReport> {
    let mut paths = Vec::new();
    collect_markdown(dir, &mut paths)?;
    paths.sort();
    let mut texts = Vec::new();
    let mut report = ImportReport::default();
    for path in paths {
        let bytes =
            fs::read(&path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        match String::from_utf8(bytes) {
            Ok(text) => texts.push((path, text)),
            Err(e) => {
                let why = format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                );
                report.skipped.push((path, why));
            }
        }
    }
    if !report.skipped.is_empty() && !skip_invalid {
        let list: Vec<String> = report
            .skipped
            .iter()
            .map(|(p, why)| format!("  {}: {why}", p.display()))
            .collect();
        return Err(Error::Invalid(format!(
            "nothing was imported: {} file(s) cannot be read as text:\n{}\n\
             Convert them to UTF-8, or run again with --skip-invalid to import the rest",
            report.skipped.len(),
            list.join("\n")
        )));
    }
    for (path, text) in texts {
        let id = node.create(&text)?;
        report.imported.push((path, id));
    }
    node.flush()?;
    Ok(report)
}

fn collect_markdown(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot read folder {}", dir.display()), e))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| Error::io(format!("cannot read folder {}", dir.display()), e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        if kind.is_dir() {
            collect_markdown(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("md"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// A file name for a note titled `title`: legal on Linux, macOS and Windows, not
/// hidden, and unique (ignoring case) among `used`, which it joins.
pub fn file_name_for(title: &str, used: &mut HashSet<String>) -> String {
    let mut stem: String = title
        .chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    stem = stem.trim().trim_end_matches(['.', ' ']).to_string();
    if stem.starts_with('.') {
        stem.insert(0, '_');
    }
    let mut cut = MAX_STEM_BYTES.min(stem.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    stem.truncate(cut);
    stem = stem.trim_end_matches(['.', ' ']).to_string();
    if stem.is_empty() {
        stem = "Untitled".into();
    }
    let base = stem.split('.').next().unwrap_or("").to_ascii_uppercase();
    let reserved = matches!(base.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (base.len() == 4
            && (base.starts_with("COM") || base.starts_with("LPT"))
            && base.as_bytes()[3].is_ascii_digit());
    if reserved {
        stem.push('_');
    }
    let mut name = format!("{stem}.md");
    let mut n = 2;
    while !used.insert(name.to_lowercase()) {
        name = format!("{stem} ({n}).md");
        n += 1;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_legal_unique_and_never_hidden() {
        let mut used = HashSet::new();
        assert_eq!(file_name_for("Plans", &mut used), "Plans.md");
        assert_eq!(file_name_for("plans", &mut used), "plans (2).md");
        assert_eq!(file_name_for("a/b: c?", &mut used), "a_b_ c_.md");
        assert_eq!(file_name_for("", &mut used), "Untitled.md");
        assert_eq!(file_name_for("  ", &mut used), "Untitled (2).md");
        assert_eq!(file_name_for(".hidden", &mut used), "_.hidden.md");
        assert_eq!(file_name_for("con", &mut used), "con_.md");
        assert_eq!(
            file_name_for("trailing dots...", &mut used),
            "trailing dots.md"
        );
        let long = "é".repeat(200);
        let name = file_name_for(&long, &mut used);
        assert!(name.len() <= MAX_STEM_BYTES + 3, "{name}");
    }
}
