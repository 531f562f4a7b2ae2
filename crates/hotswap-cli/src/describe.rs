//! `hotswap describe LIB.so [--write] [--json]`: what a module library says about its
//! types (the description the compatibility check compares), and its description record.
//!
//! The library is opened as a load would open it (without a node) and asked to describe
//! its types. With `--write`, the description is recorded beside it
//! (`LIB.so.schema`, see `hotswap_runtime::compat::record_description`): a node loading
//! these exact bytes then compares the recorded description instead of running the
//! module's `describe` (most of what the check costs a load). Without `--write`, the
//! command says whether a record is there and whether a node would use it.
//!
//! Exit status: 0 described (and recorded, with `--write`); 1 the record could not be
//! written; 2 usage error; 4 the library could not be read, opened or described.

use std::path::Path;
use std::process::ExitCode;

use hotswap::schema::ModuleSchema;
use hotswap_runtime::compat;
use serde_json::json;

use crate::check::EXIT_BAD_FILE;

/// Exit status: the record could not be written.
const EXIT_NOT_WRITTEN: u8 = 1;

/// What `describe` was asked.
#[derive(Debug)]
pub struct Options<'a> {
    /// The library.
    pub library: &'a Path,
    /// Write the description record beside it.
    pub write: bool,
    /// Print JSON.
    pub json: bool,
}

/// The record beside a library, as a node loading it would find it.
enum RecordState {
    Absent,
    Valid,
    Ignored(String),
    Written,
}

impl RecordState {
    fn name(&self) -> &'static str {
        match self {
            RecordState::Absent => "absent",
            RecordState::Valid => "valid",
            RecordState::Ignored(_) => "ignored",
            RecordState::Written => "written",
        }
    }
}

/// Run it; the exit code.
pub fn run(o: &Options<'_>) -> ExitCode {
    let lib = o.library;
    let record = compat::record_path(lib);
    let fail = |code: u8, kind: &str, msg: String| {
        if o.json {
            println!(
                "{}",
                json!({ "ok": false, "error": { "kind": kind, "message": msg } })
            );
        }
        eprintln!("error: {msg}");
        ExitCode::from(code)
    };
    let (schema, hash, len, state) = if o.write {
        match compat::record_description(lib) {
            Ok(w) => (
                w.schema,
                w.library_hash,
                w.description_len,
                RecordState::Written,
            ),
            Err(e @ compat::DescribeError::Write { .. }) => {
                return fail(EXIT_NOT_WRITTEN, "not_written", e.to_string())
            }
            Err(e) => return fail(EXIT_BAD_FILE, "bad_file", format!("{}: {e}", lib.display())),
        }
    } else {
        let d = match compat::describe_file_bytes(lib) {
            Ok(d) => d,
            Err(e) => return fail(EXIT_BAD_FILE, "bad_file", format!("{}: {e}", lib.display())),
        };
        // What a node loading these bytes from this path would make of the record.
        let state = match compat::find_record(lib, d.hash) {
            compat::RecordFound::Absent => RecordState::Absent,
            compat::RecordFound::Valid(_) => RecordState::Valid,
            compat::RecordFound::Ignored(why) => RecordState::Ignored(why),
        };
        (d.schema, d.hash, d.bytes.len(), state)
    };
    if o.json {
        let mut r = json!({ "path": record, "status": state.name() });
        if let RecordState::Ignored(why) = &state {
            r["reason"] = why.clone().into();
        }
        let v = json!({
            "ok": true,
            "library": lib,
            "module": schema.module,
            "version": schema.version,
            "library_hash": format!("{hash:016x}"),
            "description_bytes": len,
            "record": r,
            "description": schema,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", summary(&schema, hash, len));
        let rec = record.display();
        match &state {
            RecordState::Written => println!("record written: {rec} (a node loading these exact bytes uses it instead of calling describe)"),
            RecordState::Valid => println!("record: {rec} (valid for these bytes: a node uses it)"),
            RecordState::Absent => println!("record: none ({rec} does not exist; write it with --write)"),
            RecordState::Ignored(why) => println!("record: {rec} is not used by a node: {why} (rewrite it with --write)"),
        }
    }
    ExitCode::SUCCESS
}

/// The description as text: the module, its gen_server's types, its exports.
fn summary(s: &ModuleSchema, hash: u64, len: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "module {} {} (library hash {hash:016x}, description {len} bytes)",
        s.module, s.version
    );
    if let Some(g) = &s.server {
        let _ = writeln!(out, "  gen_server:");
        for (what, t) in [
            ("state", &g.state),
            ("call", &g.call),
            ("reply", &g.reply),
            ("cast", &g.cast),
            ("info", &g.info),
        ] {
            let _ = writeln!(out, "    {what}: {} = {}", t.rust, t.render());
        }
        let a = &g.accepts;
        for (what, ts) in [
            ("state", &a.state),
            ("call", &a.call),
            ("cast", &a.cast),
            ("info", &a.info),
        ] {
            for t in ts {
                let _ = writeln!(out, "    also accepts {what}: {} = {}", t.rust, t.render());
            }
        }
        if let Some(how) = &a.state_converted {
            let _ = writeln!(out, "    code_change converts the state: {how}");
        }
    }
    for e in &s.exports {
        let _ = writeln!(
            out,
            "  export {}: {} -> {}",
            e.name,
            e.arg.render(),
            e.result.render()
        );
    }
    out
}
