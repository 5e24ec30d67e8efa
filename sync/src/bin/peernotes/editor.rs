//! Editing text in the user's `$VISUAL` / `$EDITOR`, through a temporary file.
//! If the editor fails or leaves text that cannot be read, the file is kept and
//! its path printed, so nothing typed is lost.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// Opens `initial` in the user's editor and returns what they saved.
pub fn edit_text(initial: &str, label: &str) -> anyhow::Result<String> {
    let editor = std::env::var("VISUAL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| {
            std::env::var("EDITOR")
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
        .context("no editor set: set $EDITOR (e.g. `export EDITOR=nano`), or pass --stdin")?;
    let file = tempfile::Builder::new()
        .prefix("peernotes-")
        .suffix(".md")
        .tempfile()
        .context("cannot create a temporary file for the editor")?;
    std::fs::write(file.path(), initial)
        .with_context(|| format!("cannot write {}", file.path().display()))?;
    // Through the shell, so EDITOR may carry arguments ("code --wait").
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("peernotes-editor")
        .arg(file.path())
        .status()
        .with_context(|| format!("cannot start the editor `{editor}`"))?;
    if !status.success() {
        let kept = keep(file)?;
        bail!(
            "the editor `{editor}` exited with {status}; {label} was not changed \
             (what was in the editor is kept in {})",
            kept.display()
        );
    }
    let bytes = std::fs::read(file.path())
        .with_context(|| format!("cannot read back {}", file.path().display()))?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(_) => {
            let kept = keep(file)?;
            Err(peernotes_sync::Error::Invalid(format!(
                "the edited file is not UTF-8 text; {label} was not changed (the file is kept in {})",
                kept.display()
            ))
            .into())
        }
    }
}

fn keep(file: tempfile::NamedTempFile) -> anyhow::Result<std::path::PathBuf> {
    let (_, path) = file.keep().context("cannot keep the editor's file")?;
    Ok(Path::to_path_buf(&path))
}
