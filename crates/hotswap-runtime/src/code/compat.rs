//! The compatibility check: can a new version of a module read what the old one wrote?
//!
//! Both versions describe their types (`hotswap::schema`, through the descriptor's
//! `describe`); [`check`] compares the descriptions with the rules of MessagePack with
//! named fields (the README's rules table, each row verified with `rmp-serde` by a test).
//! It is a pure function of the two descriptions: the node runs it at every load that
//! replaces a gen_server's current version, and `hotswap check old.so new.so` runs it
//! without a node (`describe_file`). A library packaged with a description record
//! (`<library>.schema`, see `code::record` and `record_description_with`) gives the node
//! its description without running `describe`.
//!
//! Levels, as in schema registries:
//! * **upgrade** (refuses a load): the new version reads the old version's state (through
//!   `code_change`) and the calls, casts and other messages that were queued before the
//!   switch; an export's new code reads its old callers' arguments;
//! * **downgrade** (reported): the old version reads the new version's state and messages
//!   (what loading the old version again would need);
//! * **callers** (reported): callers built against the old version read the new replies
//!   and export results.
//!
//! A type the tracer could not describe is reported as *not checked*, with the reason:
//! never as compatible.

use std::fmt::Write as _;
use std::path::Path;

use hotswap::schema::{Fields, Format, ModuleSchema, TypeDesc, VariantBody};
use serde::Serialize;

use super::loader::error::LoadError;

/// Which way data flows between the two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The new version reads what the old one wrote (state, queued messages, arguments).
    Upgrade,
    /// The old version reads what the new one writes (a later downgrade).
    Downgrade,
    /// Callers built against the old version read the new version's replies and results.
    Callers,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Upgrade => "upgrade",
            Level::Downgrade => "downgrade",
            Level::Callers => "callers",
        })
    }
}

/// One pair of types that does not read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The callback (or export) whose data does not read: `handle_info`, `code_change`, ...
    pub callback: String,
    /// Which way.
    pub level: Level,
    /// The form that is written (the writer's type, rendered).
    pub written: String,
    /// The writer's Rust type.
    pub written_type: String,
    /// The type that must read it (rendered).
    pub reader: String,
    /// The reader's Rust type.
    pub reader_type: String,
    /// What does not read, one line each.
    pub problems: Vec<String>,
    /// What to do about it.
    pub fix: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = match self.level {
            Level::Upgrade => "the new version cannot read the old",
            Level::Downgrade => "the old version could not read the new",
            Level::Callers => "callers built against the old version cannot read the new",
        };
        write!(
            f,
            "{}: {who} form {} (`{}`) as {} (`{}`): {}. Fix: {}",
            self.callback,
            self.written_type,
            self.written,
            self.reader_type,
            self.reader,
            self.problems.join("; "),
            self.fix
        )
    }
}

/// A pair of types the check could not decide, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unchecked {
    /// The callback (or export).
    pub callback: String,
    /// Which way.
    pub level: Level,
    /// Why it was not checked.
    pub reason: String,
}

/// The result of comparing two versions of a module.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompatReport {
    /// Module name.
    pub module: String,
    /// The version being replaced.
    pub old_version: String,
    /// The version being loaded.
    pub new_version: String,
    /// Upgrade-level findings: a load of the new version is refused for these.
    pub incompatible: Vec<Finding>,
    /// Downgrade- and callers-level findings: reported, not refused.
    pub warnings: Vec<Finding>,
    /// What could not be checked.
    pub unchecked: Vec<Unchecked>,
    /// What was checked and reads (`callback (level)`).
    pub compatible: Vec<String>,
}

/// The overall answer of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Everything was checked and the new version reads the old one's data.
    Compatible,
    /// Nothing found incompatible, but something could not be checked.
    NotChecked,
    /// The new version cannot read something the old one wrote.
    Incompatible,
}

impl CompatReport {
    /// The overall answer.
    pub fn verdict(&self) -> Verdict {
        if !self.incompatible.is_empty() {
            Verdict::Incompatible
        } else if self.unchecked.iter().any(|u| u.level == Level::Upgrade) {
            Verdict::NotChecked
        } else {
            Verdict::Compatible
        }
    }

    /// Whether a load must be refused (unless forced).
    pub fn refuses(&self) -> bool {
        !self.incompatible.is_empty()
    }

    /// The report as text, one finding per paragraph.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} {} -> {}: {}",
            self.module,
            self.old_version,
            self.new_version,
            match self.verdict() {
                Verdict::Compatible => "compatible",
                Verdict::NotChecked => "nothing incompatible found, but not everything was checked",
                Verdict::Incompatible => "INCOMPATIBLE",
            }
        );
        for f in &self.incompatible {
            let _ = writeln!(s, "  incompatible: {f}");
        }
        for f in &self.warnings {
            let _ = writeln!(s, "  warning ({}): {f}", f.level);
        }
        for u in &self.unchecked {
            let _ = writeln!(
                s,
                "  not checked ({}): {}: {}",
                u.level, u.callback, u.reason
            );
        }
        for c in &self.compatible {
            let _ = writeln!(s, "  ok: {c}");
        }
        s
    }
}

/// Whether data written as `writer` reads as `reader`.
#[derive(Debug, Clone, PartialEq)]
pub enum Reads {
    /// It does.
    Yes,
    /// It does not, for these reasons.
    No(Vec<String>),
    /// A side is not described; the reason.
    Unknown(String),
}

impl Reads {
    fn and(self, other: Reads) -> Reads {
        match (self, other) {
            (Reads::Unknown(a), _) => Reads::Unknown(a),
            (_, Reads::Unknown(b)) => Reads::Unknown(b),
            (Reads::No(mut a), Reads::No(b)) => {
                a.extend(b);
                Reads::No(a)
            }
            (Reads::No(a), Reads::Yes) | (Reads::Yes, Reads::No(a)) => Reads::No(a),
            (Reads::Yes, Reads::Yes) => Reads::Yes,
        }
    }
}

/// Where in a type a reason applies (`.field`, `.0`, `[]`, `{key}`, `::Variant`, after the
/// caller's prefix): a chain on the stack, rendered only when a reason is written, so that
/// a check that finds nothing formats no path.
#[derive(Clone, Copy)]
enum At<'a> {
    Root(&'a str),
    Field(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
    Elem(&'a At<'a>),
    Key(&'a At<'a>),
    Value(&'a At<'a>),
    Variant(&'a At<'a>, &'a str),
}

impl At<'_> {
    fn is_root_empty(&self) -> bool {
        matches!(self, At::Root(p) if p.is_empty())
    }
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Root(p) => f.write_str(p),
            At::Field(up, name) => write!(f, "{up}.{name}"),
            At::Index(up, i) => write!(f, "{up}.{i}"),
            At::Elem(up) => write!(f, "{up}[]"),
            At::Key(up) => write!(f, "{up}{{key}}"),
            At::Value(up) => write!(f, "{up}{{value}}"),
            At::Variant(up, name) => write!(f, "{up}::{name}"),
        }
    }
}

fn no(path: &At<'_>, why: String) -> Reads {
    if path.is_root_empty() {
        Reads::No(vec![why])
    } else {
        Reads::No(vec![format!("at {path}: {why}")])
    }
}

/// Integer ranges (`None` for 128-bit integers: read only as themselves).
fn int_range(f: &Format) -> Option<(i128, i128)> {
    Some(match f {
        Format::U8 => (0, u8::MAX as i128),
        Format::U16 => (0, u16::MAX as i128),
        Format::U32 => (0, u32::MAX as i128),
        Format::U64 => (0, u64::MAX as i128),
        Format::I8 => (i8::MIN as i128, i8::MAX as i128),
        Format::I16 => (i16::MIN as i128, i16::MAX as i128),
        Format::I32 => (i32::MIN as i128, i32::MAX as i128),
        Format::I64 => (i64::MIN as i128, i64::MAX as i128),
        _ => return None,
    })
}

/// Whether data written as `writer` reads as `reader` under MessagePack with named fields
/// (`rmp-serde`); `path` names the place for the reasons.
pub fn reads(writer: &Format, reader: &Format, path: &str) -> Reads {
    reads_at(writer, reader, &At::Root(path))
}

fn reads_at(writer: &Format, reader: &Format, path: &At<'_>) -> Reads {
    use Format as F;
    match (writer, reader) {
        (F::Unknown(w), _) => Reads::Unknown(format!("the written type is not described: {w}")),
        (_, F::Unknown(r)) => Reads::Unknown(format!("the reading type is not described: {r}")),
        // Newtype structs are written as their content.
        (F::Newtype(_, w), r) => reads_at(w, r, path),
        (w, F::Newtype(_, r)) => reads_at(w, r, path),
        (F::Option(w), F::Option(r)) => reads_at(w, r, path),
        (F::Unit | F::UnitStruct(_), F::Option(_) | F::Unit | F::UnitStruct(_)) => Reads::Yes,
        (w, F::Option(r)) => reads_at(w, r, path),
        (F::Option(w), r) => no(
            path,
            format!("written as Option<{w}>: a None cannot be read as {r}"),
        ),
        (F::Bool, F::Bool) | (F::Str, F::Str) | (F::Bytes, F::Bytes) => Reads::Yes,
        (F::Char, F::Char | F::Str) => Reads::Yes,
        (F::F32, F::F32 | F::F64) | (F::F64, F::F64) => Reads::Yes,
        (F::U128, F::U128) | (F::I128, F::I128) => Reads::Yes,
        (w, r) if int_range(w).is_some() && int_range(r).is_some() => {
            let ((wl, wh), (rl, rh)) = (int_range(w).expect("int"), int_range(r).expect("int"));
            if rl <= wl && wh <= rh {
                Reads::Yes
            } else {
                no(
                    path,
                    format!("written as {w}, read as {r}: values of {w} outside {r}'s range do not fit (a narrowed type)"),
                )
            }
        }
        (w, F::F64) if int_range(w).is_some_and(|(l, h)| l >= -(1 << 53) && h <= 1 << 53) => {
            Reads::Yes
        }
        (F::Seq(w), F::Seq(r)) => reads_at(w, r, &At::Elem(path)),
        (F::Tuple(ws) | F::TupleStruct(_, ws), F::Seq(r)) => {
            ws.iter().enumerate().fold(Reads::Yes, |acc, (i, w)| {
                acc.and(reads_at(w, r, &At::Index(path, i)))
            })
        }
        (F::Tuple(ws) | F::TupleStruct(_, ws), F::Tuple(rs) | F::TupleStruct(_, rs)) => {
            tuples(ws, rs, path)
        }
        (F::Map(wk, wv), F::Map(rk, rv)) => {
            reads_at(wk, rk, &At::Key(path)).and(reads_at(wv, rv, &At::Value(path)))
        }
        (F::Struct(_, ws), F::Map(rk, rv)) => {
            let mut acc = reads_at(&F::Str, rk, &At::Key(path));
            for f in &ws.fields {
                acc = acc.and(reads_at(&f.format, rv, &At::Field(path, &f.name)));
            }
            acc
        }
        (F::Map(wk, wv), F::Struct(name, rs)) => {
            let mut acc = reads_at(wk, &F::Str, &At::Key(path));
            let req: Vec<&str> = rs
                .fields
                .iter()
                .filter(|f| f.required)
                .map(|f| f.name.as_str())
                .collect();
            if !req.is_empty() {
                acc = acc.and(no(
                    path,
                    format!("written as a map, read as struct {name}: the map may lack the required field(s) {}", req.join(", ")),
                ));
            }
            if rs.deny_unknown {
                acc = acc.and(no(
                    path,
                    format!("struct {name} denies unknown fields and a map may hold any key"),
                ));
            }
            for f in &rs.fields {
                acc = acc.and(reads_at(wv, &f.format, &At::Field(path, &f.name)));
            }
            acc
        }
        (F::Struct(_, ws), F::Struct(_, rs)) => fields(ws, rs, path),
        (F::Enum(_, wvs), F::Enum(rname, rvs)) => {
            let mut acc = Reads::Yes;
            for wv in wvs {
                let p = At::Variant(path, &wv.name);
                let Some(rv) = rvs.iter().find(|r| r.name == wv.name) else {
                    acc = acc.and(no(
                        path,
                        format!("variant `{}` is written but enum {rname} has no such variant (removed or renamed)", wv.name),
                    ));
                    continue;
                };
                acc = acc.and(match (&wv.body, &rv.body) {
                    (VariantBody::Unit, VariantBody::Unit) => Reads::Yes,
                    (VariantBody::Newtype(w), VariantBody::Newtype(r)) => {
                        reads_at(w, r, &At::Index(&p, 0))
                    }
                    (VariantBody::Tuple(w), VariantBody::Tuple(r)) => tuples(w, r, &p),
                    (VariantBody::Struct(w), VariantBody::Struct(r)) => fields(w, r, &p),
                    (w, r) => no(
                        path,
                        format!(
                            "variant `{}` is written as {}, read as {}",
                            wv.name,
                            body_kind(&wv.name, w),
                            body_kind(&rv.name, r)
                        ),
                    ),
                });
            }
            acc
        }
        (w, r) => no(path, format!("written as {w}, read as {r}")),
    }
}

/// A tuple (or tuple struct, or tuple variant's values) written as `ws`, read as `rs`.
fn tuples(ws: &[Format], rs: &[Format], path: &At<'_>) -> Reads {
    if ws.len() != rs.len() {
        return no(
            path,
            format!(
                "written as a tuple of {}, read as a tuple of {}",
                ws.len(),
                rs.len()
            ),
        );
    }
    ws.iter()
        .zip(rs)
        .enumerate()
        .fold(Reads::Yes, |acc, (i, (w, r))| {
            acc.and(reads_at(w, r, &At::Index(path, i)))
        })
}

fn body_kind(name: &str, b: &VariantBody) -> String {
    let v = hotswap::schema::Variant {
        name: name.to_string(),
        body: b.clone(),
    };
    let kind = match b {
        VariantBody::Unit => "a unit variant",
        VariantBody::Newtype(_) => "a newtype variant",
        VariantBody::Tuple(_) => "a tuple variant",
        VariantBody::Struct(_) => "a struct variant",
        VariantBody::Unseen => "an untraced variant",
    };
    format!("{kind} `{v}`")
}

fn fields(w: &Fields, r: &Fields, path: &At<'_>) -> Reads {
    let mut acc = Reads::Yes;
    for rf in &r.fields {
        let found = w
            .fields
            .iter()
            .find(|wf| wf.name == rf.name || rf.aliases.contains(&wf.name));
        match found {
            Some(wf) => acc = acc.and(reads_at(&wf.format, &rf.format, &At::Field(path, &rf.name))),
            None if rf.required => {
                let orphans: Vec<&str> = w
                    .fields
                    .iter()
                    .filter(|wf| {
                        !r.fields
                            .iter()
                            .any(|x| x.name == wf.name || x.aliases.contains(&wf.name))
                    })
                    .map(|wf| wf.name.as_str())
                    .collect();
                let hint = if orphans.is_empty() {
                    "give it #[serde(default)] or make it an Option".to_string()
                } else {
                    format!(
                        "if it is the renamed `{}`, add #[serde(alias = \"{}\")]; otherwise give it #[serde(default)] or make it an Option",
                        orphans.join("`/`"),
                        orphans[0]
                    )
                };
                acc = acc.and(no(
                    path,
                    format!("field `{}` is required but never written ({hint})", rf.name),
                ));
            }
            None => {}
        }
    }
    if r.deny_unknown {
        for wf in &w.fields {
            if !r
                .fields
                .iter()
                .any(|x| x.name == wf.name || x.aliases.contains(&wf.name))
            {
                acc = acc.and(no(
                    path,
                    format!(
                        "field `{}` is written but the reader denies unknown fields",
                        wf.name
                    ),
                ));
            }
        }
    }
    acc
}

/// Check `writer` against any of `readers` (a type and the older forms it declares);
/// `fix` is asked only for a finding.
fn pair(
    callback: &str,
    level: Level,
    writer: &TypeDesc,
    readers: &[&TypeDesc],
    fix: &dyn Fn() -> String,
    out: &mut CompatReport,
) {
    let label = format!("{callback} ({level})");
    if !has_unknown(&writer.format)
        && readers
            .iter()
            .any(|r| r.hash == writer.hash && r.format == writer.format)
    {
        out.compatible.push(label);
        return;
    }
    let mut first_no = None;
    let mut unknown = None;
    for r in readers {
        match reads(&writer.format, &r.format, "") {
            Reads::Yes => {
                out.compatible.push(label);
                return;
            }
            Reads::No(p) => {
                first_no.get_or_insert(p);
            }
            Reads::Unknown(u) => {
                unknown.get_or_insert(u);
            }
        }
    }
    if let Some(reason) = unknown {
        out.unchecked.push(Unchecked {
            callback: callback.into(),
            level,
            reason,
        });
        return;
    }
    let finding = Finding {
        callback: callback.into(),
        level,
        written: writer.render(),
        written_type: writer.rust.clone(),
        reader: readers[0].render(),
        reader_type: readers[0].rust.clone(),
        problems: first_no.unwrap_or_default(),
        fix: fix(),
    };
    if level == Level::Upgrade {
        out.incompatible.push(finding);
    } else {
        out.warnings.push(finding);
    }
}

/// Whether a description has a part the tracer could not describe.
fn has_unknown(f: &Format) -> bool {
    match f {
        Format::Unknown(_) => true,
        Format::Option(x) | Format::Seq(x) | Format::Newtype(_, x) => has_unknown(x),
        Format::Map(k, v) => has_unknown(k) || has_unknown(v),
        Format::Tuple(xs) | Format::TupleStruct(_, xs) => xs.iter().any(has_unknown),
        Format::Struct(_, s) => s.fields.iter().any(|x| has_unknown(&x.format)),
        Format::Enum(_, vs) => vs.iter().any(|v| match &v.body {
            VariantBody::Newtype(x) => has_unknown(x),
            VariantBody::Tuple(xs) => xs.iter().any(has_unknown),
            VariantBody::Struct(s) => s.fields.iter().any(|x| has_unknown(&x.format)),
            VariantBody::Unit | VariantBody::Unseen => false,
        }),
        _ => false,
    }
}

fn message_fix(cb: &str, decode: &str, method: &str, new: &TypeDesc, old: &TypeDesc) -> String {
    let short = |t: &str| t.rsplit("::").next().unwrap_or(t).to_string();
    format!(
        "keep reading the old form: override `{decode}` with `codec::decode_compat::<{}, {}>` and declare it with `fn accepts() -> Accepts {{ Accepts::new().{method}::<{}>() }}` (or change the type compatibly); or load with --force if no old {cb} message can be queued",
        short(&new.rust),
        short(&old.rust),
        short(&old.rust)
    )
}

/// Compare two versions' descriptions: `old` is the version being replaced, `new` the
/// one being loaded.
pub fn check(old: &ModuleSchema, new: &ModuleSchema) -> CompatReport {
    let mut r = CompatReport {
        module: new.module.clone(),
        old_version: old.version.clone(),
        new_version: new.version.clone(),
        incompatible: Vec::new(),
        warnings: Vec::new(),
        unchecked: Vec::new(),
        compatible: Vec::new(),
    };
    match (&old.server, &new.server) {
        (Some(o), Some(n)) => {
            let state_fix = "make the new state read the old one (#[serde(default)] or Option for added fields, #[serde(alias = \"old_name\")] for renamed ones, a type that holds every old value), or convert in code_change and declare the old type with `Accepts::new().state::<OldState>()`";
            if let Some(how) = &n.accepts.state_converted {
                r.unchecked.push(Unchecked {
                    callback: "code_change".into(),
                    level: Level::Upgrade,
                    reason: format!("code_change converts the state explicitly ({how}); only the dry run on live states checks it"),
                });
            } else {
                let readers: Vec<&TypeDesc> =
                    std::iter::once(&n.state).chain(&n.accepts.state).collect();
                pair(
                    "code_change",
                    Level::Upgrade,
                    &o.state,
                    &readers,
                    &|| state_fix.into(),
                    &mut r,
                );
            }
            let readers: Vec<&TypeDesc> =
                std::iter::once(&o.state).chain(&o.accepts.state).collect();
            pair(
                "code_change",
                Level::Downgrade,
                &n.state,
                &readers,
                &|| "loading the old version again would need its code_change to read this state".into(),
                &mut r,
            );
            let roles = [
                ("handle_call", "decode_call", "call", &o.call, &n.call, &o.accepts.call, &n.accepts.call),
                ("handle_cast", "decode_cast", "cast", &o.cast, &n.cast, &o.accepts.cast, &n.accepts.cast),
                ("handle_info", "decode_info", "info", &o.info, &n.info, &o.accepts.info, &n.accepts.info),
            ];
            for (cb, decode, method, ot, nt, oa, na) in roles {
                let readers: Vec<&TypeDesc> = std::iter::once(nt).chain(na).collect();
                let fix = || message_fix(cb, decode, method, nt, ot);
                pair(cb, Level::Upgrade, ot, &readers, &fix, &mut r);
                let readers: Vec<&TypeDesc> = std::iter::once(ot).chain(oa).collect();
                pair(
                    cb,
                    Level::Downgrade,
                    nt,
                    &readers,
                    &|| "the old version would not read the new form: send it only once every reader is upgraded, or keep the old form".into(),
                    &mut r,
                );
            }
            pair(
                "handle_call (reply)",
                Level::Callers,
                &n.reply,
                &[&o.reply],
                &|| "callers decode replies with their own (old) type: keep the reply readable as the old type".into(),
                &mut r,
            );
        }
        (Some(_), None) => r.incompatible.push(Finding {
            callback: "gen_server".into(),
            level: Level::Upgrade,
            written: "a gen_server".into(),
            written_type: old.module.clone(),
            reader: "no gen_server".into(),
            reader_type: new.module.clone(),
            problems: vec!["the new version has no gen_server, so running servers of the module cannot continue".into()],
            fix: "keep the gen_server in the new version, or stop the servers first".into(),
        }),
        _ => {}
    }
    for oe in &old.exports {
        let Some(ne) = new.exports.iter().find(|e| e.name == oe.name) else {
            r.warnings.push(Finding {
                callback: format!("export {}", oe.name),
                level: Level::Callers,
                written: oe.arg.render(),
                written_type: oe.arg.rust.clone(),
                reader: "nothing".into(),
                reader_type: String::new(),
                problems: vec![format!("export `{}` is gone: callers get undef", oe.name)],
                fix: "keep the export".into(),
            });
            continue;
        };
        let cb = format!("export {} (argument)", oe.name);
        pair(
            &cb,
            Level::Upgrade,
            &oe.arg,
            &[&ne.arg],
            &|| {
                "make the new argument type read the old one (#[serde(default)] or Option for added fields, aliases for renamed ones)".into()
            },
            &mut r,
        );
        let cb = format!("export {} (result)", oe.name);
        pair(
            &cb,
            Level::Callers,
            &ne.result,
            &[&oe.result],
            &|| {
                "callers decode the result with their own (old) type: keep it readable as the old type".into()
            },
            &mut r,
        );
    }
    r
}

/// The downgrade check of loading `old` again over `new`: the same as [`check`] with the
/// versions swapped (the old version must read the new one's state and messages).
pub fn check_downgrade(old: &ModuleSchema, new: &ModuleSchema) -> CompatReport {
    check(new, old)
}

/// Why a file could not be described.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DescribeError {
    /// The file is not a module this node could load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The module has no `describe` function (built before descriptions existed, or by
    /// hand).
    #[error("module `{module}` does not describe its types (rebuild it with this hotswap SDK)")]
    NoDescription {
        /// Module name.
        module: String,
    },
    /// Its `describe` failed or panicked, or wrote something unreadable.
    #[error("module `{module}` could not describe its types: {message}")]
    Failed {
        /// Module name.
        module: String,
        /// What went wrong.
        message: String,
    },
    /// The description record could not be written.
    #[error("cannot write the description record {}: {source}", path.display())]
    Write {
        /// The record file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A module's description as its `describe` wrote it, with the hash of the library bytes it
/// was asked of.
#[derive(Debug, Clone)]
pub struct FileDescription {
    /// `xxh3_64` of the library file's bytes (what a load computes).
    pub hash: u64,
    /// The encoded description, exactly as `describe` wrote it (what a record holds).
    pub bytes: Vec<u8>,
    /// The description decoded.
    pub schema: ModuleSchema,
}

/// Describe a module library without a node: validate and open it as a load would (in a
/// private temporary directory, handing its `init` the host API table `host`), ask its
/// `describe`, and close it again; the description with the bytes `describe` wrote and the
/// library's hash (what a description record holds). The public entries are
/// `hotswap_runtime::compat::describe_file` and `describe_file_bytes`, which pass the
/// node's table.
pub(crate) fn describe_bytes_with(
    path: &Path,
    host: &'static hotswap_abi::HostApi,
) -> Result<FileDescription, DescribeError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(1);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("hotswap-describe-{}-{seq}", std::process::id()));
    let _clean = RemoveDir(&dir);
    let mut buf = Vec::new();
    // SAFETY: as any load: the file is validated and its descriptor checked before module
    // code runs (`loader::open`).
    let o = unsafe {
        super::loader::open(
            path,
            None,
            super::loader::Target {
                code_dir: &dir,
                seq,
                node: 0,
                host,
                heap: false,
            },
            &mut buf,
            &mut |_| None,
            &mut super::loader::Ahead::default(),
        )
    }?;
    let r = match o.describe {
        None => Err(DescribeError::NoDescription {
            module: o.name.clone(),
        }),
        Some(d) => {
            let _in = super::guard::InModule::enter(0);
            call_describe(d)
                .and_then(|b| {
                    ModuleSchema::decode(&b)
                        .map(|schema| FileDescription {
                            hash: o.hash,
                            bytes: b,
                            schema,
                        })
                        .map_err(|e| e.to_string())
                })
                .map_err(|message| DescribeError::Failed {
                    module: o.name.clone(),
                    message,
                })
        }
    };
    if super::guard::active() {
        // SAFETY: nothing of the library runs or is referenced any more: only its `init`
        // and `describe` ran, and both returned.
        let _ = unsafe { super::loader::close(o.handle, o.guard_id, o.inode, &o.file) };
    }
    // Without the guard the library stays mapped (closing could crash a thread at exit).
    r
}

/// Where [`describe_file_recorded`](crate::compat::describe_file_recorded) took a
/// description from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DescriptionSource {
    /// The library's description record (made for these exact bytes); no module code ran.
    Record,
    /// The module's `describe`, run in a library opened as a load would open it; with why
    /// a record beside it was not used, if there was one.
    Describe {
        /// Why the record beside the library was ignored (`None`: there was none).
        record_ignored: Option<String>,
    },
}

/// The description of the library at `path` from its valid description record, else as
/// [`describe_bytes_with`] makes it (see `compat::describe_file_recorded`).
pub(crate) fn describe_recorded_with(
    path: &Path,
    host: &'static hotswap_abi::HostApi,
) -> Result<(ModuleSchema, DescriptionSource), DescribeError> {
    use super::record::{find, record_path, Found};
    let record = record_path(path);
    // The library is read (and hashed) only when there is a record to check it against:
    // without one, `describe_bytes_with` reads it once. A file that cannot be read is
    // reported by `describe_bytes_with`, as without a record.
    let lib = record.exists().then(|| std::fs::read(path).ok()).flatten();
    let record_ignored = match lib.map(|b| find(&record, xxhash_rust::xxh3::xxh3_64(&b))) {
        None | Some(Found::Absent) => None,
        Some(Found::Ignored(why)) => Some(why),
        Some(Found::Valid(d)) => match ModuleSchema::decode(&d) {
            Ok(s) => return Ok((s, DescriptionSource::Record)),
            Err(e) => Some(format!("its description does not decode ({e})")),
        },
    };
    describe_bytes_with(path, host)
        .map(|d| (d.schema, DescriptionSource::Describe { record_ignored }))
}

/// What [`record_description`](crate::compat::record_description) wrote.
#[derive(Debug, Clone)]
pub struct RecordWritten {
    /// The record file (`<library>.schema`).
    pub record: std::path::PathBuf,
    /// `xxh3_64` of the library's bytes, as recorded.
    pub library_hash: u64,
    /// The size of the description in the record, in bytes.
    pub description_len: usize,
    /// The description.
    pub schema: ModuleSchema,
}

/// Describe the library at `path` as [`describe_bytes_with`] does and write its description
/// record beside it (see [`super::record`]), atomically.
pub(crate) fn record_description_with(
    path: &Path,
    host: &'static hotswap_abi::HostApi,
) -> Result<RecordWritten, DescribeError> {
    let d = describe_bytes_with(path, host)?;
    let record = super::record::record_path(path);
    crate::util::write_atomic(&record, &super::record::encode_record(d.hash, &d.bytes)).map_err(
        |(_, source)| DescribeError::Write {
            path: record.clone(),
            source,
        },
    )?;
    Ok(RecordWritten {
        record,
        library_hash: d.hash,
        description_len: d.bytes.len(),
        schema: d.schema,
    })
}

struct RemoveDir<'a>(&'a Path);

impl Drop for RemoveDir<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0);
    }
}

/// Call a module's `describe`; its encoded schema or the message it wrote.
pub(crate) fn call_describe(d: hotswap_abi::DescribeFn) -> Result<Vec<u8>, String> {
    let mut out: Vec<u8> = Vec::new();
    // SAFETY: `d` comes from an accepted descriptor of a library that is open; `out` is a
    // `Vec<u8>` as `write_vec` expects.
    let st = unsafe {
        d(
            &mut out as *mut Vec<u8> as *mut std::ffi::c_void,
            hotswap::private::write_vec,
        )
    };
    match st {
        hotswap_abi::STATUS_READY => Ok(out),
        hotswap_abi::STATUS_PANICKED => Err(format!(
            "describe panicked: {}",
            String::from_utf8_lossy(&out)
        )),
        _ => Err(String::from_utf8_lossy(&out).into_owned()),
    }
}
