//! How the demo tells its story: timestamped lines for people, or one JSON object per line
//! (`--json`) for programs.

use std::io::Write;
use std::time::Instant;

use serde_json::{json, Map, Value};

/// Prints the steps of a run, each stamped with the time since the run began.
#[derive(Debug)]
pub struct Reporter {
    start: Instant,
    json: bool,
    verbose: bool,
}

impl Reporter {
    /// A reporter whose clock starts now; `verbose` also prints [`Reporter::detail`] lines.
    pub fn new(json: bool, verbose: bool) -> Reporter {
        Reporter {
            start: Instant::now(),
            json,
            verbose,
        }
    }

    fn secs(&self) -> f64 {
        (self.start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
    }

    /// One step: `msg` for people; in JSON mode a record `{"t", "step", "msg", ...fields}`
    /// (`fields` must be a JSON object, or `null` for none).
    pub fn step(&self, step: &str, msg: impl AsRef<str>, fields: Value) {
        let t = self.secs();
        if self.json {
            let mut rec = Map::new();
            rec.insert("t".into(), json!(t));
            rec.insert("step".into(), json!(step));
            rec.insert("msg".into(), json!(msg.as_ref()));
            if let Value::Object(f) = fields {
                rec.extend(f);
            }
            emit(&Value::Object(rec).to_string());
        } else {
            emit(&format!("[{t:>7.3}s] {}", msg.as_ref()));
        }
    }

    /// An explanatory line for people (indented under the previous step); nothing in JSON mode.
    pub fn note(&self, msg: impl AsRef<str>) {
        if !self.json {
            emit(&format!("            {}", msg.as_ref()));
        }
    }

    /// A line of detail for people, printed only with `--verbose` (nothing in JSON mode,
    /// whose records carry the same data).
    pub fn detail(&self, msg: impl AsRef<str>) {
        if self.verbose && !self.json {
            emit(&format!("            {}", msg.as_ref()));
        }
    }

    /// A fatal error: on stderr for people; in JSON mode also a final `error` record on stdout.
    pub fn error(&self, exit_code: u8, msg: &str) {
        if self.json {
            let t = self.secs();
            emit(&json!({ "t": t, "step": "error", "ok": false, "exit_code": exit_code, "msg": msg }).to_string());
        }
        eprintln!("error: {msg}");
    }
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) must not turn into a panic.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
