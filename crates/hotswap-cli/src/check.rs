//! `hotswap check OLD.so NEW.so`: the compatibility check of a load, without a node (for
//! CI). Both libraries are opened as a load would open them, asked to describe their
//! types, and compared (`hotswap_runtime::compat`).
//!
//! Exit status: 0 compatible; 1 incompatible (the new version cannot read what the old one
//! wrote; with `--downgrade`, also the other way); 2 usage error; 4 a library could not be
//! read, opened or described; 5 nothing incompatible found but something could not be
//! checked (a type the tracer does not cover: the report says which and why). With
//! `--node` (see `control`), 3 also means the node could not be asked.

use std::path::Path;
use std::process::ExitCode;

use hotswap_runtime::compat::{self, CompatReport, Verdict};

/// Exit status: compatible.
pub const EXIT_COMPATIBLE: u8 = 0;
/// Exit status: incompatible.
pub const EXIT_INCOMPATIBLE: u8 = 1;
/// Exit status: a library could not be read, opened or described.
pub const EXIT_BAD_FILE: u8 = 4;
/// Exit status: nothing incompatible found, but something could not be checked.
pub const EXIT_NOT_CHECKED: u8 = 5;

/// What `check` was asked.
#[derive(Debug)]
pub struct Options<'a> {
    /// The version being replaced.
    pub old: &'a Path,
    /// The version being loaded.
    pub new: &'a Path,
    /// Print JSON.
    pub json: bool,
    /// Count downgrade findings (the old version reading the new one's data) as
    /// incompatible too.
    pub downgrade: bool,
}

/// Run the check; the exit code.
pub fn run(o: &Options<'_>) -> ExitCode {
    let describe = |p: &Path| compat::describe_file(p).map_err(|e| format!("{}: {e}", p.display()));
    let (old, new) = match (describe(o.old), describe(o.new)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            if o.json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "error": { "kind": "bad_file", "message": e } })
                );
            }
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_FILE);
        }
    };
    if old.module != new.module {
        eprintln!(
            "error: {} holds module `{}` and {} holds `{}`: compare two versions of one module",
            o.old.display(),
            old.module,
            o.new.display(),
            new.module
        );
        return ExitCode::from(EXIT_BAD_FILE);
    }
    let mut report = compat::check(&old, &new);
    if o.downgrade {
        promote_downgrade(&mut report);
    }
    let verdict = report.verdict();
    if o.json {
        let v = serde_json::json!({ "ok": true, "verdict": verdict, "report": report });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", report.to_text());
    }
    ExitCode::from(match verdict {
        Verdict::Compatible => EXIT_COMPATIBLE,
        Verdict::Incompatible => EXIT_INCOMPATIBLE,
        Verdict::NotChecked => EXIT_NOT_CHECKED,
    })
}

/// `--downgrade`: the downgrade findings refuse too.
fn promote_downgrade(r: &mut CompatReport) {
    let (down, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut r.warnings)
        .into_iter()
        .partition(|f| f.level == compat::Level::Downgrade);
    r.warnings = rest;
    r.incompatible.extend(down);
    for u in &mut r.unchecked {
        if u.level == compat::Level::Downgrade {
            u.level = compat::Level::Upgrade;
        }
    }
}
