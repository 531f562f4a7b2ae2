//! `hotswap check OLD.so NEW.so`: the compatibility check of a load, without a node (for
//! CI). Each library's description is taken as a node loading it would take it: from its
//! description record (`LIB.so.schema`, made for these exact bytes by `hotswap describe
//! --write`, `release` or `dev`) when there is a valid one, else by opening the library as
//! a load would and asking its `describe`. The two are compared
//! (`hotswap_runtime::compat`); the output says where each description came from.
//!
//! Exit status: 0 compatible; 1 incompatible (the new version cannot read what the old one
//! wrote; with `--downgrade`, also the other way); 2 usage error; 4 a library could not be
//! read, opened or described; 5 nothing incompatible found but something could not be
//! checked (a type the tracer does not cover: the report says which and why). With
//! `--node` (see `control`), 3 also means the node could not be asked.

use std::path::Path;
use std::process::ExitCode;

use hotswap_runtime::compat::{self, CompatReport, DescriptionSource, Verdict};

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
    let describe =
        |p: &Path| compat::describe_file_recorded(p).map_err(|e| format!("{}: {e}", p.display()));
    let ((old, old_src), (new, new_src)) = match (describe(o.old), describe(o.new)) {
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
        let v = serde_json::json!({
            "ok": true,
            "verdict": verdict,
            "report": report,
            "descriptions": {
                "old": source_json(o.old, &old_src),
                "new": source_json(o.new, &new_src),
            },
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", report.to_text());
        println!("descriptions:");
        for (p, src) in [(o.old, &old_src), (o.new, &new_src)] {
            println!("  {}: {}", p.display(), source_text(src));
        }
    }
    ExitCode::from(match verdict {
        Verdict::Compatible => EXIT_COMPATIBLE,
        Verdict::Incompatible => EXIT_INCOMPATIBLE,
        Verdict::NotChecked => EXIT_NOT_CHECKED,
    })
}

/// Where a description came from, for the text output.
fn source_text(src: &DescriptionSource) -> String {
    match src {
        DescriptionSource::Record => "its description record (no module code ran)".into(),
        DescriptionSource::Describe {
            record_ignored: None,
        } => "its describe (no description record; `hotswap describe --write` makes one)".into(),
        DescriptionSource::Describe {
            record_ignored: Some(why),
        } => format!("its describe (description record ignored: {why})"),
    }
}

/// Where a description came from, for `--json`: `{"path", "source": "record" |
/// "describe", "record_ignored"}`.
fn source_json(path: &Path, src: &DescriptionSource) -> serde_json::Value {
    let (source, ignored) = match src {
        DescriptionSource::Record => ("record", None),
        DescriptionSource::Describe { record_ignored } => ("describe", record_ignored.as_deref()),
    };
    serde_json::json!({ "path": path, "source": source, "record_ignored": ignored })
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
