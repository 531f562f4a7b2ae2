//! Descriptions of the types that cross versions: what a module's state and messages look
//! like in serde's data model, so that a node can check, before new code runs, that it can
//! read what the old code wrote (and the other way round).
//!
//! [`describe`] traces a type's `Deserialize` implementation: it plays a deserializer that
//! hands the type zeros and empty strings and records what the type asks for (a `u32`, a
//! struct with fields `a` and `b`, an enum with variants `X` and `Y(u64)`). It runs the
//! type several times: once per enum variant (each variant is traced on its own run), then
//! replays of those runs with struct fields left out (which tells a required field from one
//! with `#[serde(default)]` or of type `Option`: a run leaves out every field not known yet
//! and learns one required field from the missing field the type reports, or that all
//! were optional; an unclear answer falls back to one field per run), and it finds
//! `#[serde(alias)]` names and `#[serde(deny_unknown_fields)]`. The result is a [`Format`]
//! tree plus a hash. Within [`describing`] (a module's `describe`), a struct met by several
//! of the types described is probed once.
//!
//! # What is covered, and what is not
//!
//! Covered: every primitive, `String`, bytes, `Option`, sequences (`Vec`, sets), maps,
//! tuples, arrays, unit/newtype/tuple/named structs, externally tagged enums (serde's
//! default) with unit, newtype, tuple and struct variants, `#[serde(default)]`,
//! `#[serde(alias)]`, `#[serde(rename)]`, `#[serde(deny_unknown_fields)]`,
//! `#[serde(transparent)]`, and custom `Deserialize` impls that ask for a definite shape
//! and accept zero values.
//!
//! Not covered, and described as [`Format::Unknown`] with the reason (a check then says
//! "not checked", never "compatible"): anything that asks for `deserialize_any`
//! (internally tagged, adjacently tagged and untagged enums, `#[serde(flatten)]`,
//! self-describing values such as `serde_json::Value`), recursive types (cut at a nesting
//! depth of [`MAX_DEPTH`]), custom `Deserialize` impls that reject the zero sample, and
//! types that do not implement `Deserialize` at all (a `Reply` that is only `Serialize`).
//! What the tracer cannot see either: `skip_serializing_if` on the writer's side, and
//! conversions done by hand after decoding; the dry run on live states
//! (`hotswap check --node`) is the backstop for those.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::{Deserialize, Serialize};

/// How deep the tracer follows nested types before it gives up (recursive types).
pub const MAX_DEPTH: usize = 48;

/// How many traces of one type the tracer runs at most (variants and field probes).
pub const MAX_RUNS: usize = 256;

/// A type as serde's data model sees it when the type is read.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Format {
    /// `()`.
    Unit,
    /// `bool`.
    Bool,
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `i128`.
    I128,
    /// `u8`.
    U8,
    /// `u16`.
    U16,
    /// `u32`.
    U32,
    /// `u64`.
    U64,
    /// `u128`.
    U128,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `char`.
    Char,
    /// A string.
    Str,
    /// A byte string.
    Bytes,
    /// `Option<T>`.
    Option(Box<Format>),
    /// A sequence of any length (`Vec<T>`, sets).
    Seq(Box<Format>),
    /// A map.
    Map(Box<Format>, Box<Format>),
    /// A tuple or an array of fixed length.
    Tuple(Vec<Format>),
    /// A unit struct (`struct S;`).
    UnitStruct(String),
    /// A newtype struct (`struct S(T);`).
    Newtype(String, Box<Format>),
    /// A tuple struct.
    TupleStruct(String, Vec<Format>),
    /// A struct with named fields.
    Struct(String, Fields),
    /// An enum (externally tagged: variants are written by name).
    Enum(String, Vec<Variant>),
    /// What the tracer could not describe, and why. A check treats it as "not checked".
    Unknown(String),
}

/// The named fields of a struct or struct variant.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Fields {
    /// The fields, in declaration order.
    pub fields: Vec<Field>,
    /// `#[serde(deny_unknown_fields)]`: a field the reader does not know is an error.
    pub deny_unknown: bool,
}

/// One named field.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Field {
    /// The name it is written under.
    pub name: String,
    /// Other names it is also read from (`#[serde(alias)]`).
    pub aliases: Vec<String>,
    /// Its type.
    pub format: Format,
    /// A reader fails when the field is absent (no `#[serde(default)]`, not an `Option`).
    pub required: bool,
}

/// One enum variant.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Variant {
    /// The name it is written under.
    pub name: String,
    /// What it carries.
    pub body: VariantBody,
}

/// What a variant carries.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum VariantBody {
    /// Nothing (`Increment`).
    Unit,
    /// One value (`Increment(u64)`).
    Newtype(Format),
    /// Several values (`Move(i32, i32)`).
    Tuple(Vec<Format>),
    /// Named fields (`Move { x: i32 }`).
    Struct(Fields),
    /// Not traced (only while tracing; never in a finished description).
    Unseen,
}

/// A described type: its Rust name, its format and a hash of the format.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TypeDesc {
    /// `std::any::type_name` of the type (for messages only; never compared).
    pub rust: String,
    /// The format, or [`Format::Unknown`] with the reason.
    pub format: Format,
    /// A hash of the format (equal formats, equal hashes).
    pub hash: u64,
}

impl TypeDesc {
    /// A description of a type the tracer was not given (the reason says why).
    pub fn unknown(rust: &str, why: impl Into<String>) -> TypeDesc {
        TypeDesc::new(rust.to_string(), Format::Unknown(why.into()))
    }

    fn new(rust: String, format: Format) -> TypeDesc {
        // The FNV-1a hash of the format's encoding (`codec::encode`), hashed as it is
        // written rather than written into a buffer first.
        let mut h = Fnv(FNV_OFFSET);
        if let Err(e) = rmp_serde::encode::write_named(&mut h, &format) {
            panic!("cannot encode a format: {e}");
        }
        TypeDesc {
            rust,
            format,
            hash: h.0,
        }
    }

    /// The type as short Rust-like text: `NewTick::Increment(u64)`, `CountServer { n: u64 }`.
    pub fn render(&self) -> String {
        self.format.to_string()
    }
}

/// Other forms a gen_server's explicit conversions accept besides its own types: declared
/// by [`crate::gen_server::GenServer::accepts`] so that the compatibility check counts
/// them. A module that overrides `decode_info` with [`crate::codec::decode_compat`]
/// declares the older form with [`Accepts::info`], one whose `code_change` reads an older
/// state type declares it with [`Accepts::state`].
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Accepts {
    /// Older state forms `code_change` reads.
    pub state: Vec<TypeDesc>,
    /// Older call forms `decode_call` reads.
    pub call: Vec<TypeDesc>,
    /// Older cast forms `decode_cast` reads.
    pub cast: Vec<TypeDesc>,
    /// Older info forms `decode_info` reads.
    pub info: Vec<TypeDesc>,
    /// `code_change` converts every earlier state by itself (for example by version);
    /// the text says how. The static check then leaves the state to the dry run.
    pub state_converted: Option<String>,
}

impl Accepts {
    /// Nothing besides the server's own types.
    pub fn new() -> Accepts {
        Accepts::default()
    }
    /// `code_change` also reads states of type `T`.
    pub fn state<T: DeserializeOwned>(mut self) -> Accepts {
        self.state.push(describe::<T>());
        self
    }
    /// `decode_call` also reads requests of type `T`.
    pub fn call<T: DeserializeOwned>(mut self) -> Accepts {
        self.call.push(describe::<T>());
        self
    }
    /// `decode_cast` also reads casts of type `T`.
    pub fn cast<T: DeserializeOwned>(mut self) -> Accepts {
        self.cast.push(describe::<T>());
        self
    }
    /// `decode_info` also reads messages of type `T`.
    pub fn info<T: DeserializeOwned>(mut self) -> Accepts {
        self.info.push(describe::<T>());
        self
    }
    /// `code_change` converts any earlier state by itself; `how` says how (shown in
    /// reports). The state is then checked by the dry run only.
    pub fn state_converted(mut self, how: impl Into<String>) -> Accepts {
        self.state_converted = Some(how.into());
        self
    }
}

/// The types of a gen_server.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ServerSchema {
    /// The state (`Self`).
    pub state: TypeDesc,
    /// `Call` requests.
    pub call: TypeDesc,
    /// `Reply` values.
    pub reply: TypeDesc,
    /// `Cast` messages.
    pub cast: TypeDesc,
    /// `Info` messages.
    pub info: TypeDesc,
    /// What its explicit conversions accept besides.
    pub accepts: Accepts,
}

/// The types of an exported function.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FnSchema {
    /// The export's name.
    pub name: String,
    /// Its argument.
    pub arg: TypeDesc,
    /// Its result.
    pub result: TypeDesc,
}

/// Everything a module describes about itself (`ModuleDescriptor::describe`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ModuleSchema {
    /// Module name.
    pub module: String,
    /// Module version.
    pub version: String,
    /// Its gen_server, if it has one.
    pub server: Option<ServerSchema>,
    /// Its exported functions (`exports` and `functions`).
    pub exports: Vec<FnSchema>,
}

impl ModuleSchema {
    /// Encode (MessagePack, named fields).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        crate::codec::encode_into(&mut out, self);
        out
    }
    /// Decode what [`ModuleSchema::encode`] wrote.
    pub fn decode(b: &[u8]) -> Result<ModuleSchema, crate::codec::DecodeError> {
        crate::codec::decode(b)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over the bytes written.
struct Fnv(u64);

impl std::io::Write for Fnv {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        for &x in b {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
fn fnv64(b: &[u8]) -> u64 {
    let mut h = Fnv(FNV_OFFSET);
    let _ = std::io::Write::write_all(&mut h, b);
    h.0
}

// ---------------------------------------------------------------------------------------
// Rendering

fn join(f: &mut fmt::Formatter<'_>, items: &[Format]) -> fmt::Result {
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{x}")?;
    }
    Ok(())
}

impl fmt::Display for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{ ")?;
        for (i, x) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}: {}", x.name, x.format)?;
            if !x.required && !matches!(x.format, Format::Option(_)) {
                f.write_str(" (default)")?;
            }
        }
        f.write_str(" }")
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match &self.body {
            VariantBody::Unit => Ok(()),
            VariantBody::Newtype(x) => write!(f, "({x})"),
            VariantBody::Tuple(xs) => {
                f.write_str("(")?;
                join(f, xs)?;
                f.write_str(")")
            }
            VariantBody::Struct(s) => write!(f, " {s}"),
            VariantBody::Unseen => f.write_str("(?)"),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Format::Unit => "()",
            Format::Bool => "bool",
            Format::I8 => "i8",
            Format::I16 => "i16",
            Format::I32 => "i32",
            Format::I64 => "i64",
            Format::I128 => "i128",
            Format::U8 => "u8",
            Format::U16 => "u16",
            Format::U32 => "u32",
            Format::U64 => "u64",
            Format::U128 => "u128",
            Format::F32 => "f32",
            Format::F64 => "f64",
            Format::Char => "char",
            Format::Str => "String",
            Format::Bytes => "bytes",
            Format::Option(x) => return write!(f, "Option<{x}>"),
            Format::Seq(x) => return write!(f, "Vec<{x}>"),
            Format::Map(k, v) => return write!(f, "Map<{k}, {v}>"),
            Format::Tuple(xs) => {
                f.write_str("(")?;
                join(f, xs)?;
                return f.write_str(")");
            }
            Format::UnitStruct(n) => n,
            Format::Newtype(n, x) => return write!(f, "{n}({x})"),
            Format::TupleStruct(n, xs) => {
                write!(f, "{n}(")?;
                join(f, xs)?;
                return f.write_str(")");
            }
            Format::Struct(n, s) => return write!(f, "{n} {s}"),
            Format::Enum(n, vs) => {
                write!(f, "enum {n} {{ ")?;
                for (i, v) in vs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                return f.write_str(" }");
            }
            Format::Unknown(why) => return write!(f, "<not described: {why}>"),
        };
        f.write_str(s)
    }
}

// ---------------------------------------------------------------------------------------
// Tracing

/// Describe `T` by tracing its `Deserialize` implementation (see the module docs).
pub fn describe<T: DeserializeOwned>() -> TypeDesc {
    let rust = std::any::type_name::<T>().to_string();
    TypeDesc::new(rust, trace::<T>())
}

/// Why a trace stopped.
#[derive(Debug)]
enum TraceError {
    /// The type reported a missing field (a probe left it out).
    MissingField(&'static str),
    /// What was learnt (an alias, `deny_unknown_fields`) needs another run.
    Rerun,
    /// Not covered, with the reason.
    Uncovered(String),
    /// The type refused the sample values.
    Custom(String),
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::MissingField(n) => write!(f, "missing field `{n}`"),
            TraceError::Rerun => f.write_str("rerun"),
            TraceError::Uncovered(s) | TraceError::Custom(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for TraceError {}

thread_local! {
    // The key under which a struct's value was last asked for, and the duplicate or
    // unknown field a type reported (the error methods below cannot see the tracer).
    static REPORTED: RefCell<Option<Reported>> = const { RefCell::new(None) };
}

enum Reported {
    Duplicate(&'static str),
    Unknown(String),
}

impl de::Error for TraceError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        TraceError::Custom(msg.to_string())
    }
    fn missing_field(field: &'static str) -> Self {
        TraceError::MissingField(field)
    }
    fn duplicate_field(field: &'static str) -> Self {
        REPORTED.with(|r| *r.borrow_mut() = Some(Reported::Duplicate(field)));
        TraceError::Custom(format!("duplicate field `{field}`"))
    }
    fn unknown_field(field: &str, _expected: &'static [&'static str]) -> Self {
        REPORTED.with(|r| *r.borrow_mut() = Some(Reported::Unknown(field.to_string())));
        TraceError::Custom(format!("unknown field `{field}`"))
    }
}

/// What the tracer knows across runs of one type.
#[derive(Default)]
struct Plan {
    /// Per struct path: names found to be aliases (alias → primary).
    aliases: Aliases,
    /// Per struct path: names found to be primary.
    primaries: HashMap<String, HashSet<&'static str>>,
    /// Struct paths that deny unknown fields.
    deny: HashSet<String>,
    /// Per enum path: which variants have been traced.
    seen: HashMap<String, Vec<bool>>,
    /// Enum paths: how often each was rotated past its fully traced variants.
    rotation: HashMap<String, usize>,
}

/// A key a struct was given in an exploring run, and how many struct occurrences and enum
/// choices its value used (a replay that leaves the key out skips as many, so that the
/// structs and enums after it get what they got in the exploring run).
#[derive(Clone, Copy)]
struct Key {
    name: &'static str,
    structs: u32,
    choices: u32,
}

/// A struct's `Deserialize` impl: its field list (a static), its visitor's type and the
/// struct's (or variant's) name. A struct met at several places is one impl, probed once;
/// two impls whose field lists the compiler merged into one static still differ by visitor
/// type or name.
#[derive(Clone, Copy)]
struct ImplId {
    fields: &'static [&'static str],
    visitor: &'static str,
    name: &'static str,
}

impl PartialEq for ImplId {
    fn eq(&self, o: &ImplId) -> bool {
        std::ptr::eq(self.fields, o.fields) && self.visitor == o.visitor && self.name == o.name
    }
}

/// What the probes found about an impl's fields: `None` not known yet, `Some(true)`
/// required.
struct ImplFields {
    id: ImplId,
    fields: Vec<(&'static str, Option<bool>)>,
}

/// The probe results of struct impls. Within [`describing`] they are shared by the types
/// described (a struct used by several message types is probed once).
type Impls = Vec<ImplFields>;

thread_local! {
    static SHARED: RefCell<Option<Impls>> = const { RefCell::new(None) };
}

/// Run `f` (which describes several types, as a module's `describe` does) with the probe
/// results of struct impls shared between the types it describes.
pub fn describing<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(Option<Impls>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let old = self.0.take();
            SHARED.with(|s| *s.borrow_mut() = old);
        }
    }
    let _reset = Reset(SHARED.with(|s| s.borrow_mut().replace(Vec::new())));
    f()
}

/// An exploring run that succeeded, for the field probes that replay it: its enum
/// choices, its structs' keys in the order they were met, and their impls.
struct Replay {
    choices: Vec<usize>,
    keys: Vec<Vec<Key>>,
    impls: Vec<ImplId>,
}

/// What a probe run leaves out.
#[derive(Clone, Copy)]
enum Omit<'p> {
    /// One field of one struct occurrence.
    One(usize, &'static str),
    /// Every field not known yet of each impl in the table (up to 64 per struct), at the
    /// first place the run meets the impl.
    Unknown(&'p [ImplFields]),
}

/// What a probe run left out and where it stopped.
#[derive(Default)]
struct Probed {
    /// (struct occurrence, impl in the table, names left out).
    omitted: Vec<(usize, usize, Vec<&'static str>)>,
    /// The first struct whose own `visit_map` failed (not one of its values): its
    /// occurrence and the missing field it reported, if that was the error.
    origin: Option<(usize, Option<&'static str>)>,
}

/// One run. An exploring run (`probe` is `None`) records formats and paths; a probe run
/// replays an exploring run's choices and keys with fields left out, recording nothing.
struct Run<'p> {
    plan: &'p mut Plan,
    probe: Option<(&'p Replay, Omit<'p>)>,
    /// Enum choices made, in order (and by path when exploring).
    choices: Vec<usize>,
    by_path: Vec<(String, usize, usize)>,
    /// Keys presented to each struct, in order.
    keys: Vec<Vec<Key>>,
    /// Struct paths reached (exploring), with their occurrence, primary fields and impl.
    structs: Vec<(String, usize, Vec<&'static str>, ImplId)>,
    /// Probe runs: the next struct occurrence and enum choice of the replay.
    next_struct: usize,
    next_choice: usize,
    probed: Probed,
    /// The path of the value being traced (exploring only).
    path: String,
    /// The format of the value just traced.
    result: Option<Format>,
}

impl<'p> Run<'p> {
    fn new(plan: &'p mut Plan, probe: Option<(&'p Replay, Omit<'p>)>) -> Run<'p> {
        Run {
            plan,
            probe,
            choices: Vec::new(),
            by_path: Vec::new(),
            keys: Vec::new(),
            structs: Vec::new(),
            next_struct: 0,
            next_choice: 0,
            probed: Probed::default(),
            path: String::new(),
            result: None,
        }
    }
    fn recording(&self) -> bool {
        self.probe.is_none()
    }
}

const UNKNOWN_PROBE: &str = "__hotswap_unknown_field_probe";

/// What one exploring run yields: the format (or why not), and the run itself.
type Explored = (
    Result<Format, TraceError>,
    Vec<usize>,
    Vec<Vec<Key>>,
    Vec<(String, usize, Vec<&'static str>, ImplId)>,
);

fn explore<T: DeserializeOwned>(plan: &mut Plan) -> Explored {
    let run = RefCell::new(Run::new(plan, None));
    let r = T::deserialize(Tracer {
        run: &run,
        len: 0,
        depth: 0,
    })
    .map(|_| ());
    explored(run.into_inner(), r)
}

/// What an exploring run found (not generic: one copy for all types).
#[inline(never)]
fn explored(run: Run<'_>, r: Result<(), TraceError>) -> Explored {
    let r = match r {
        Ok(()) => {
            for (p, i, n) in &run.by_path {
                let s = run
                    .plan
                    .seen
                    .entry(p.clone())
                    .or_insert_with(|| vec![false; *n]);
                if let Some(x) = s.get_mut(*i) {
                    *x = true;
                }
            }
            Ok(run
                .result
                .unwrap_or_else(|| Format::Unknown("nothing traced".into())))
        }
        Err(e) => Err(e),
    };
    (r, run.choices, run.keys, run.structs)
}

/// Replay `r` with what `omit` says left out: whether the type succeeded, and what was
/// left out where.
fn probe<T: DeserializeOwned>(
    plan: &mut Plan,
    r: &Replay,
    omit: Omit<'_>,
) -> (Result<(), TraceError>, Probed) {
    let run = RefCell::new(Run::new(plan, Some((r, omit))));
    let res = T::deserialize(Tracer {
        run: &run,
        len: 0,
        depth: 0,
    })
    .map(|_| ());
    (res, run.into_inner().probed)
}

/// The runs of one type: the only parts of the tracer's driver generic over the type (the
/// rest is one copy for all the types a module describes, less code to fault in).
#[derive(Clone, Copy)]
struct Runner {
    explore: fn(&mut Plan) -> Explored,
    probe: ProbeFn,
}

/// [`probe`] of one type.
type ProbeFn = fn(&mut Plan, &Replay, Omit<'_>) -> (Result<(), TraceError>, Probed);

impl Runner {
    fn of<T: DeserializeOwned>() -> Runner {
        Runner {
            explore: explore::<T>,
            probe: probe::<T>,
        }
    }
}

/// Probe field `f` of struct occurrence `at` of replay `r` alone: whether it is required.
fn probe_one(t: Runner, plan: &mut Plan, r: &Replay, at: usize, f: &'static str) -> bool {
    match (t.probe)(plan, r, Omit::One(at, f)).0 {
        Ok(()) => false,
        Err(TraceError::MissingField(m)) if m == f => true,
        // Anything else: assume the reader needs it (the safe side).
        Err(_) => true,
    }
}

fn trace<T: DeserializeOwned>() -> Format {
    trace_with(Runner::of::<T>(), false).0
}

#[cfg(test)]
fn trace_counted<T: DeserializeOwned>(one_field: bool) -> (Format, usize) {
    trace_with(Runner::of::<T>(), one_field)
}

/// Trace `T`; the format and the number of runs. `one_field`: probe one field per run
/// (the first tracer's way, kept as the tests' oracle) instead of leaving out every field
/// not known yet and learning from what the type reports missing.
#[inline(never)]
fn trace_with(t: Runner, one_field: bool) -> (Format, usize) {
    let mut plan = Plan::default();
    // Struct path → (its fields, its impl, the replay that reaches it, its occurrence there).
    let mut reached: Vec<(String, Vec<&'static str>, ImplId, usize, usize)> = Vec::new();
    let mut known: HashSet<String> = HashSet::new();
    let mut replays: Vec<Replay> = Vec::new();
    let mut acc: Option<Format> = None;
    let mut runs = 0;
    // Explore: one run per enum variant until every variant met has been traced.
    loop {
        runs += 1;
        if runs > MAX_RUNS {
            return (
                Format::Unknown(format!(
                    "more than {MAX_RUNS} traces needed (too many variants)"
                )),
                runs,
            );
        }
        let (r, choices, keys, structs) = (t.explore)(&mut plan);
        match r {
            Ok(f) => {
                let replay = replays.len();
                let mut used = false;
                let mut impls = Vec::with_capacity(structs.len());
                for (p, occurrence, fields, id) in structs {
                    impls.push(id);
                    if known.insert(p.clone()) {
                        reached.push((p, fields, id, replay, occurrence));
                        used = true;
                    }
                }
                if used {
                    replays.push(Replay {
                        choices,
                        keys,
                        impls,
                    });
                }
                acc = match acc.take() {
                    None => Some(f),
                    Some(a) => match merge(a, f) {
                        Ok(m) => Some(m),
                        Err(why) => return (Format::Unknown(why), runs),
                    },
                };
                if plan.seen.values().all(|s| s.iter().all(|x| *x)) {
                    break;
                }
            }
            Err(TraceError::Rerun) => continue,
            Err(TraceError::MissingField(n)) => {
                return (
                    Format::Unknown(format!(
                        "the type reported field `{n}` missing although it was given"
                    )),
                    runs,
                )
            }
            Err(e) => return (Format::Unknown(e.to_string()), runs),
        }
    }
    // Probe: which fields may be absent. The impls reached, their fields not known yet
    // (or known from the other types of the same `describing`).
    let shared = if one_field {
        None
    } else {
        SHARED.with(|s| s.borrow_mut().take())
    };
    let within = shared.is_some();
    let mut impls: Impls = shared.unwrap_or_default();
    let mut at: Vec<usize> = Vec::with_capacity(reached.len());
    for (_, fields, id, _, _) in &reached {
        let i = match impls.iter().position(|x| x.id == *id) {
            Some(i) => i,
            None => {
                impls.push(ImplFields {
                    id: *id,
                    fields: fields.iter().map(|f| (*f, None)).collect(),
                });
                impls.len() - 1
            }
        };
        at.push(i);
    }
    if !one_field {
        // serde's derived impl, at the end of the map, fills the defaults of absent
        // optional fields and reports the first absent required one: leave out every
        // field not known yet; `Ok` ⇒ all were optional, a missing field reported by the
        // struct that left it out ⇒ that one is required (and is given in the next run).
        // Anything else is ambiguous: the fields left out are probed one by one.
        for (r, replay) in replays.iter().enumerate() {
            loop {
                let open = replay.impls.iter().any(|id| {
                    impls
                        .iter()
                        .any(|x| x.id == *id && x.fields.iter().take(64).any(|(_, s)| s.is_none()))
                });
                if !open {
                    break;
                }
                runs += 1;
                let (res, probed) = (t.probe)(&mut plan, replay, Omit::Unknown(&impls));
                if probed.omitted.is_empty() {
                    break;
                }
                let mut set = |i: usize, f: &'static str, req: bool| {
                    if let Some(x) = impls[i].fields.iter_mut().find(|(n, _)| *n == f) {
                        x.1 = Some(req);
                    }
                };
                match (res, probed.origin) {
                    (Ok(()), _) => {
                        for (_, i, names) in &probed.omitted {
                            for f in names {
                                set(*i, f, false);
                            }
                        }
                    }
                    (Err(TraceError::MissingField(m)), Some((o, Some(f))))
                        if m == f
                            && probed
                                .omitted
                                .iter()
                                .any(|(x, _, names)| *x == o && names.contains(&f)) =>
                    {
                        let i = probed.omitted.iter().find(|(x, ..)| *x == o).unwrap().1;
                        set(i, f, true);
                    }
                    _ => {
                        for (o, i, names) in &probed.omitted {
                            for f in names {
                                runs += 1;
                                let req = probe_one(t, &mut plan, &replays[r], *o, f);
                                set(*i, f, req);
                            }
                        }
                    }
                }
            }
        }
    }
    // Fields still not known (one field per run, or beyond the 64 a run leaves out): one
    // probe each, on a replay that reaches the struct.
    for (k, (_, fields, _, replay, occurrence)) in reached.iter().enumerate() {
        for f in fields {
            let open = impls[at[k]]
                .fields
                .iter()
                .any(|(n, s)| n == f && s.is_none());
            if open {
                runs += 1;
                let req = probe_one(t, &mut plan, &replays[*replay], *occurrence, f);
                if let Some(x) = impls[at[k]].fields.iter_mut().find(|(n, _)| n == f) {
                    x.1 = Some(req);
                }
            }
        }
    }
    let mut required: Required = HashMap::with_capacity(reached.len());
    for (k, (path, fields, ..)) in reached.iter().enumerate() {
        let req = fields
            .iter()
            .map(|f| {
                let r = impls[at[k]]
                    .fields
                    .iter()
                    .find(|(n, _)| n == f)
                    .and_then(|(_, s)| *s);
                (*f, r.unwrap_or(true))
            })
            .collect();
        required.insert(path.clone(), req);
    }
    if within {
        SHARED.with(|s| *s.borrow_mut() = Some(impls));
    }
    let mut acc = acc.expect("at least one run succeeded");
    apply_required(&mut acc, &mut String::new(), &required, &plan.aliases);
    (acc, runs)
}

/// Merge two traces of one type (they differ only in the enum variants traced).
fn merge(a: Format, b: Format) -> Result<Format, String> {
    let differ = || {
        "the type's description differs between two traces (a custom Deserialize that is not deterministic)".to_string()
    };
    Ok(match (a, b) {
        (Format::Option(x), Format::Option(y)) => Format::Option(Box::new(merge(*x, *y)?)),
        (Format::Seq(x), Format::Seq(y)) => Format::Seq(Box::new(merge(*x, *y)?)),
        (Format::Map(k, v), Format::Map(k2, v2)) => {
            Format::Map(Box::new(merge(*k, *k2)?), Box::new(merge(*v, *v2)?))
        }
        (Format::Newtype(n, x), Format::Newtype(m, y)) if n == m => {
            Format::Newtype(n, Box::new(merge(*x, *y)?))
        }
        (Format::Tuple(xs), Format::Tuple(ys)) => Format::Tuple(merge_all(xs, ys)?),
        (Format::TupleStruct(n, xs), Format::TupleStruct(m, ys)) if n == m => {
            Format::TupleStruct(n, merge_all(xs, ys)?)
        }
        (Format::Struct(n, s), Format::Struct(m, t)) if n == m => {
            Format::Struct(n, merge_fields(s, t)?)
        }
        (Format::Enum(n, vs), Format::Enum(m, ws)) if n == m && vs.len() == ws.len() => {
            let mut out = Vec::with_capacity(vs.len());
            for (v, w) in vs.into_iter().zip(ws) {
                if v.name != w.name {
                    return Err(differ());
                }
                let body = match (v.body, w.body) {
                    (VariantBody::Unseen, b) | (b, VariantBody::Unseen) => b,
                    (VariantBody::Unit, VariantBody::Unit) => VariantBody::Unit,
                    (VariantBody::Newtype(x), VariantBody::Newtype(y)) => {
                        VariantBody::Newtype(merge(x, y)?)
                    }
                    (VariantBody::Tuple(xs), VariantBody::Tuple(ys)) => {
                        VariantBody::Tuple(merge_all(xs, ys)?)
                    }
                    (VariantBody::Struct(s), VariantBody::Struct(t)) => {
                        VariantBody::Struct(merge_fields(s, t)?)
                    }
                    _ => return Err(differ()),
                };
                out.push(Variant { name: v.name, body });
            }
            Format::Enum(n, out)
        }
        (a, b) if a == b => a,
        _ => return Err(differ()),
    })
}

fn merge_all(xs: Vec<Format>, ys: Vec<Format>) -> Result<Vec<Format>, String> {
    if xs.len() != ys.len() {
        return Err("a tuple's length differs between two traces".into());
    }
    xs.into_iter().zip(ys).map(|(x, y)| merge(x, y)).collect()
}

fn merge_fields(s: Fields, t: Fields) -> Result<Fields, String> {
    if s.fields.len() != t.fields.len() {
        return Err("a struct's fields differ between two traces".into());
    }
    let mut out = Vec::with_capacity(s.fields.len());
    for (x, y) in s.fields.into_iter().zip(t.fields) {
        if x.name != y.name {
            return Err("a struct's fields differ between two traces".into());
        }
        out.push(Field {
            format: merge(x.format, y.format)?,
            ..x
        });
    }
    Ok(Fields {
        fields: out,
        deny_unknown: s.deny_unknown || t.deny_unknown,
    })
}

/// Per struct path: whether each field is required.
type Required = HashMap<String, Vec<(&'static str, bool)>>;

/// Per struct path: names found to be aliases (alias → primary).
type Aliases = HashMap<String, HashMap<&'static str, &'static str>>;

/// Fill in `required` and `aliases` (paths as the tracer builds them; `path` is a buffer
/// holding this value's path, restored on return).
fn apply_required(f: &mut Format, path: &mut String, req: &Required, aliases: &Aliases) {
    use fmt::Write as _;
    let len = path.len();
    match f {
        Format::Option(x) => {
            path.push('?');
            apply_required(x, path, req, aliases);
        }
        Format::Seq(x) => {
            path.push_str("[]");
            apply_required(x, path, req, aliases);
        }
        Format::Newtype(_, x) => {
            path.push_str(".0");
            apply_required(x, path, req, aliases);
        }
        Format::Map(k, v) => {
            path.push_str("{k}");
            apply_required(k, path, req, aliases);
            path.truncate(len);
            path.push_str("{v}");
            apply_required(v, path, req, aliases);
        }
        Format::Tuple(xs) | Format::TupleStruct(_, xs) => {
            for (i, x) in xs.iter_mut().enumerate() {
                path.truncate(len);
                let _ = write!(path, ".{i}");
                apply_required(x, path, req, aliases);
            }
        }
        Format::Struct(_, s) => apply_fields(s, path, req, aliases),
        Format::Enum(_, vs) => {
            for v in vs {
                path.truncate(len);
                path.push_str("::");
                path.push_str(&v.name);
                let p = path.len();
                match &mut v.body {
                    VariantBody::Newtype(x) => {
                        path.push_str(".0");
                        apply_required(x, path, req, aliases);
                    }
                    VariantBody::Tuple(xs) => {
                        for (i, x) in xs.iter_mut().enumerate() {
                            path.truncate(p);
                            let _ = write!(path, ".{i}");
                            apply_required(x, path, req, aliases);
                        }
                    }
                    VariantBody::Struct(s) => apply_fields(s, path, req, aliases),
                    VariantBody::Unit | VariantBody::Unseen => {}
                }
            }
        }
        _ => {}
    }
    path.truncate(len);
}

fn apply_fields(s: &mut Fields, path: &mut String, req: &Required, aliases: &Aliases) {
    let len = path.len();
    let al = aliases.get(path.as_str());
    let rq = req.get(path.as_str());
    for x in &mut s.fields {
        if let Some(&(_, r)) = rq.and_then(|rq| rq.iter().find(|(n, _)| *n == x.name)) {
            x.required = r;
        }
        if let Some(al) = al {
            let mut a: Vec<String> = al
                .iter()
                .filter(|(_, p)| **p == x.name)
                .map(|(a, _)| a.to_string())
                .collect();
            a.sort();
            x.aliases = a;
        }
        path.truncate(len);
        path.push('.');
        path.push_str(&x.name);
        apply_required(&mut x.format, path, req, aliases);
    }
    path.truncate(len);
}

/// The deserializer that records what a type asks for. `len` is the length of its path
/// in the run's path buffer (exploring runs only).
struct Tracer<'a, 'p> {
    run: &'a RefCell<Run<'p>>,
    len: usize,
    depth: usize,
}

impl<'a, 'p> Tracer<'a, 'p> {
    /// A tracer for a part of this value at `suffix` (the caller restores the path with
    /// [`Tracer::back`] once the part is traced).
    fn child(&self, suffix: fmt::Arguments<'_>) -> Result<Tracer<'a, 'p>, TraceError> {
        if self.depth >= MAX_DEPTH {
            return Err(TraceError::Uncovered(format!(
                "nests deeper than {MAX_DEPTH} levels (recursive types are not covered)"
            )));
        }
        let mut run = self.run.borrow_mut();
        if run.recording() {
            run.path.truncate(self.len);
            let _ = fmt::Write::write_fmt(&mut run.path, suffix);
        }
        Ok(Tracer {
            run: self.run,
            len: run.path.len(),
            depth: self.depth + 1,
        })
    }
    /// The variant an enum at this place is traced with.
    #[inline(never)]
    fn choose(&self, variants: &'static [&'static str]) -> usize {
        let mut run = self.run.borrow_mut();
        match run.probe {
            Some((replay, _)) => {
                let i = replay.choices.get(run.next_choice).copied().unwrap_or(0);
                run.next_choice += 1;
                i
            }
            None => {
                // The first variant not traced yet at this place; when all are,
                // rotate (their insides may still hold untraced variants).
                let path = run.path[..self.len].to_string();
                let seen = run.plan.seen.get(&path);
                let first = (0..variants.len())
                    .find(|i| !seen.is_some_and(|s| s.get(*i).copied().unwrap_or(false)));
                let i = match first {
                    Some(i) => i,
                    None => {
                        let r = run.plan.rotation.entry(path.clone()).or_insert(0);
                        *r += 1;
                        *r % variants.len()
                    }
                };
                run.by_path.push((path, i, variants.len()));
                run.choices.push(i);
                i
            }
        }
    }
    /// Record an enum traced with variant `i`.
    #[inline(never)]
    fn set_enum(
        &self,
        name: &'static str,
        variants: &'static [&'static str],
        i: usize,
        body: Option<VariantBody>,
    ) {
        self.set(|| {
            let mut body = Some(body.unwrap_or(VariantBody::Unit));
            let vs = variants
                .iter()
                .enumerate()
                .map(|(j, n)| Variant {
                    name: n.to_string(),
                    body: if j == i {
                        body.take().unwrap_or(VariantBody::Unseen)
                    } else {
                        VariantBody::Unseen
                    },
                })
                .collect();
            Format::Enum(name.into(), vs)
        });
    }
    fn back(&self) {
        self.run.borrow_mut().path.truncate(self.len);
    }
    fn path(&self) -> String {
        self.run.borrow().path[..self.len].to_string()
    }
    fn set(&self, f: impl FnOnce() -> Format) {
        let mut run = self.run.borrow_mut();
        if run.recording() {
            run.result = Some(f());
        }
    }
    fn take(&self) -> Format {
        self.run.borrow_mut().result.take().unwrap_or(Format::Unit)
    }
    /// Trace one value with `seed` at `suffix`; its format.
    fn value<'de, S: DeserializeSeed<'de>>(
        &self,
        suffix: fmt::Arguments<'_>,
        seed: S,
    ) -> Result<(S::Value, Format), TraceError> {
        let v = seed.deserialize(self.child(suffix)?);
        self.back();
        Ok((v?, self.take()))
    }

    fn tuple<'de, V: Visitor<'de>>(
        &self,
        len: usize,
        visitor: V,
    ) -> Result<(V::Value, Vec<Format>), TraceError> {
        let mut acc = SeqTrace {
            tracer: self,
            left: len,
            i: 0,
            out: Vec::new(),
        };
        let v = visitor.visit_seq(&mut acc)?;
        let out = std::mem::take(&mut acc.out);
        Ok((v, out))
    }

    fn fields<'de, V: Visitor<'de>>(
        &self,
        fields: &'static [&'static str],
        name: &'static str,
        visitor: V,
    ) -> Result<(V::Value, Fields), TraceError> {
        let id = ImplId {
            fields,
            visitor: std::any::type_name::<V>(),
            name,
        };
        let st = self.fields_begin(id);
        let mut access = MapTrace {
            tracer: self,
            keys: st.keys(),
            skip: st.skip,
            next: 0,
            probe_unknown: st.probe_unknown,
            current: None,
            out: Vec::new(),
            spans: Vec::new(),
            value_failed: false,
        };
        let r = visitor.visit_map(&mut access);
        let seen = (
            access.current,
            std::mem::take(&mut access.out),
            std::mem::take(&mut access.spans),
            access.value_failed,
        );
        match r {
            Ok(v) => Ok((v, self.fields_end(st, seen, None)?)),
            Err(e) => Err(self
                .fields_end(st, seen, Some(e))
                .err()
                .unwrap_or_else(|| TraceError::Custom("a struct failed without an error".into()))),
        }
    }

    /// Before a struct's map: the keys to present (not generic, as [`Tracer::fields_end`]).
    #[inline(never)]
    fn fields_begin(&self, id: ImplId) -> FieldsState<'p> {
        let mut run = self.run.borrow_mut();
        if let Some((replay, omit)) = run.probe {
            // A replay: the keys that run presented, some left out.
            let occurrence = run.next_struct;
            run.next_struct += 1;
            let keys: &'p [Key] = replay.keys.get(occurrence).map_or(&[], |k| k.as_slice());
            let mut skip: u64 = 0;
            match omit {
                Omit::One(at, f) => {
                    if at == occurrence {
                        if let Some(k) = keys.iter().take(64).position(|k| k.name == f) {
                            skip = 1 << k;
                        }
                    }
                }
                Omit::Unknown(impls) => {
                    let first = !run
                        .probed
                        .omitted
                        .iter()
                        .any(|(_, i, _)| impls[*i].id == id);
                    if let Some(i) = impls.iter().position(|x| x.id == id).filter(|_| first) {
                        let mut names = Vec::new();
                        for (k, key) in keys.iter().enumerate().take(64) {
                            if impls[i]
                                .fields
                                .iter()
                                .any(|(n, s)| *n == key.name && s.is_none())
                            {
                                skip |= 1 << k;
                                names.push(key.name);
                            }
                        }
                        if skip != 0 {
                            run.probed.omitted.push((occurrence, i, names));
                        }
                    }
                }
            }
            return FieldsState {
                id,
                occurrence,
                replayed: Some(keys),
                keys: Vec::new(),
                skip,
                probe_unknown: false,
                path: String::new(),
                primaries: Vec::new(),
                deny: false,
            };
        }
        let occurrence = run.keys.len();
        let path = run.path[..self.len].to_string();
        let al = run.plan.aliases.get(&path);
        let pr = run.plan.primaries.get(&path);
        let mut keys: Vec<Key> = id
            .fields
            .iter()
            .copied()
            .filter(|k| !al.is_some_and(|a| a.contains_key(k)))
            .map(|name| Key {
                name,
                structs: 0,
                choices: 0,
            })
            .collect();
        let primaries: Vec<&'static str> = keys.iter().map(|k| k.name).collect();
        // Known primary names first, so that a later alias shows itself as a duplicate.
        keys.sort_by_key(|k| !pr.is_some_and(|p| p.contains(k.name)));
        let deny = run.plan.deny.contains(&path);
        run.keys.push(Vec::new());
        REPORTED.with(|r| *r.borrow_mut() = None);
        FieldsState {
            id,
            occurrence,
            replayed: None,
            keys,
            skip: 0,
            probe_unknown: !deny,
            path,
            primaries,
            deny,
        }
    }

    /// After a struct's map: what it yields, or why it failed.
    #[inline(never)]
    fn fields_end(
        &self,
        st: FieldsState<'p>,
        (current, out, spans, value_failed): MapSeen,
        err: Option<TraceError>,
    ) -> Result<Fields, TraceError> {
        let mut run = self.run.borrow_mut();
        if st.replayed.is_some() {
            if let Some(e) = err {
                if run.probed.origin.is_none() && !value_failed {
                    let missing = match &e {
                        TraceError::MissingField(f) => Some(*f),
                        _ => None,
                    };
                    run.probed.origin = Some((st.occurrence, missing));
                }
                return Err(e);
            }
            return Ok(Fields {
                fields: Vec::new(),
                deny_unknown: false,
            });
        }
        let FieldsState {
            id,
            occurrence,
            keys,
            path,
            primaries,
            deny,
            ..
        } = st;
        match err {
            None => {
                run.keys[occurrence] = keys
                    .iter()
                    .map(|k| {
                        spans
                            .iter()
                            .find(|s| s.name == k.name)
                            .copied()
                            .unwrap_or(*k)
                    })
                    .collect();
                let fields = primaries
                    .iter()
                    .map(|k| Field {
                        name: k.to_string(),
                        aliases: Vec::new(),
                        format: out
                            .iter()
                            .find(|(n, _)| n == k)
                            .map(|(_, f)| f.clone())
                            .unwrap_or_else(|| Format::Unknown(format!("field `{k}` not traced"))),
                        required: true,
                    })
                    .collect();
                run.structs.push((path, occurrence, primaries, id));
                Ok(Fields {
                    fields,
                    deny_unknown: deny,
                })
            }
            Some(e) => {
                let reported = REPORTED.with(|r| r.borrow_mut().take());
                match (reported, current) {
                    (Some(Reported::Duplicate(primary)), Some(key)) => {
                        if key != primary {
                            run.plan
                                .aliases
                                .entry(path.clone())
                                .or_default()
                                .insert(key, primary);
                        }
                        run.plan.primaries.entry(path).or_default().insert(primary);
                        Err(TraceError::Rerun)
                    }
                    (Some(Reported::Unknown(k)), _) if k == UNKNOWN_PROBE => {
                        run.plan.deny.insert(path);
                        Err(TraceError::Rerun)
                    }
                    _ => Err(e),
                }
            }
        }
    }
}

/// What a struct's map saw: the last key, the values' formats and spans, whether a value
/// failed.
type MapSeen = (
    Option<&'static str>,
    Vec<(&'static str, Format)>,
    Vec<Key>,
    bool,
);

/// A struct being traced, between [`Tracer::fields_begin`] and [`Tracer::fields_end`].
struct FieldsState<'p> {
    id: ImplId,
    occurrence: usize,
    /// A replay: the keys the exploring run presented.
    replayed: Option<&'p [Key]>,
    /// Exploring: the keys presented.
    keys: Vec<Key>,
    skip: u64,
    probe_unknown: bool,
    path: String,
    primaries: Vec<&'static str>,
    deny: bool,
}

impl FieldsState<'_> {
    fn keys(&self) -> &[Key] {
        self.replayed.unwrap_or(&self.keys)
    }
}

struct SeqTrace<'t, 'a, 'p> {
    tracer: &'t Tracer<'a, 'p>,
    left: usize,
    i: usize,
    out: Vec<Format>,
}

impl<'de> de::SeqAccess<'de> for &mut SeqTrace<'_, '_, '_> {
    type Error = TraceError;
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, TraceError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let (v, f) = self.tracer.value(format_args!(".{}", self.i), seed)?;
        self.i += 1;
        self.out.push(f);
        Ok(Some(v))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

struct MapTrace<'t, 'k, 'a, 'p> {
    tracer: &'t Tracer<'a, 'p>,
    keys: &'k [Key],
    /// The keys left out (a probe): bit `i` for `keys[i]`.
    skip: u64,
    next: usize,
    probe_unknown: bool,
    current: Option<&'static str>,
    out: Vec<(&'static str, Format)>,
    /// Exploring: what each key's value used (see [`Key`]).
    spans: Vec<Key>,
    /// A value failed (so an error of the struct may not be its own).
    value_failed: bool,
}

impl<'de> de::MapAccess<'de> for &mut MapTrace<'_, '_, '_, '_> {
    type Error = TraceError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        match self.next_name() {
            Some(key) => seed.deserialize(key.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }
    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, TraceError> {
        let key = self.current.unwrap_or("?");
        let before = self.before_value();
        match self.tracer.value(format_args!(".{key}"), seed) {
            Ok((v, f)) => {
                self.after_value(key, before, f);
                Ok(v)
            }
            Err(e) => {
                self.value_failed = true;
                Err(e)
            }
        }
    }
}

impl MapTrace<'_, '_, '_, '_> {
    /// The next key to present, past the keys left out.
    #[inline(never)]
    fn next_name(&mut self) -> Option<&'static str> {
        while self.next < 64 && self.skip & (1 << self.next) != 0 {
            // Left out: the structs and enums its value held are skipped too.
            let k = self.keys[self.next];
            let mut run = self.tracer.run.borrow_mut();
            run.next_struct += k.structs as usize;
            run.next_choice += k.choices as usize;
            self.next += 1;
        }
        let key = if let Some(k) = self.keys.get(self.next) {
            k.name
        } else if self.probe_unknown && self.next == self.keys.len() {
            UNKNOWN_PROBE
        } else {
            return None;
        };
        self.next += 1;
        self.current = Some(key);
        Some(key)
    }
    /// Exploring: the struct occurrences and enum choices before a value.
    fn before_value(&self) -> Option<(usize, usize)> {
        let run = self.tracer.run.borrow();
        run.recording().then(|| (run.keys.len(), run.choices.len()))
    }
    /// Exploring: record a value's format and span.
    #[inline(never)]
    fn after_value(&mut self, key: &'static str, before: Option<(usize, usize)>, f: Format) {
        if key == UNKNOWN_PROBE {
            return;
        }
        if let Some((s, c)) = before {
            let run = self.tracer.run.borrow();
            self.spans.push(Key {
                name: key,
                structs: (run.keys.len() - s) as u32,
                choices: (run.choices.len() - c) as u32,
            });
            drop(run);
            self.out.push((key, f));
        }
    }
}

/// A map of one entry, to trace a map's key and value types.
struct OneEntry<'t, 'a, 'p> {
    tracer: &'t Tracer<'a, 'p>,
    done: bool,
    key: Option<Format>,
    value: Option<Format>,
}

impl<'de> de::MapAccess<'de> for &mut OneEntry<'_, '_, '_> {
    type Error = TraceError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        let (v, f) = self.tracer.value(format_args!("{{k}}"), seed)?;
        self.key = Some(f);
        Ok(Some(v))
    }
    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, TraceError> {
        let (v, f) = self.tracer.value(format_args!("{{v}}"), seed)?;
        self.value = Some(f);
        Ok(v)
    }
}

struct EnumTrace<'t, 'a, 'p> {
    tracer: &'t Tracer<'a, 'p>,
    name: &'static str,
    body: Option<VariantBody>,
}

impl<'de, 't, 'a, 'p> de::EnumAccess<'de> for &mut EnumTrace<'t, 'a, 'p> {
    type Error = TraceError;
    type Variant = Self;
    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self), TraceError> {
        let v = seed.deserialize(self.name.into_deserializer())?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut EnumTrace<'_, '_, '_> {
    type Error = TraceError;
    fn unit_variant(self) -> Result<(), TraceError> {
        self.body = Some(VariantBody::Unit);
        Ok(())
    }
    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, TraceError> {
        let (v, f) = self.tracer.value(format_args!("::{}.0", self.name), seed)?;
        self.body = Some(VariantBody::Newtype(f));
        Ok(v)
    }
    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let t = self.tracer.child(format_args!("::{}", self.name))?;
        let r = t.tuple(len, visitor);
        self.tracer.back();
        let (v, xs) = r?;
        self.body = Some(VariantBody::Tuple(xs));
        Ok(v)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let t = self.tracer.child(format_args!("::{}", self.name))?;
        let r = t.fields(fields, self.name, visitor);
        self.tracer.back();
        let (v, s) = r?;
        self.body = Some(VariantBody::Struct(s));
        Ok(v)
    }
}

macro_rules! primitive {
    ($($method:ident => $visit:ident($($val:expr)?), $fmt:expr;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
                let v = visitor.$visit($($val)?)?;
                self.set(|| $fmt);
                Ok(v)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Tracer<'_, '_> {
    type Error = TraceError;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, TraceError> {
        let path = self.path();
        Err(TraceError::Uncovered(format!(
            "at `{}` the type accepts any value (deserialize_any: an untagged, internally or adjacently tagged enum, #[serde(flatten)], or a self-describing value such as serde_json::Value)",
            if path.is_empty() { "the top" } else { &path }
        )))
    }

    primitive! {
        deserialize_bool => visit_bool(false), Format::Bool;
        deserialize_i8 => visit_i8(0), Format::I8;
        deserialize_i16 => visit_i16(0), Format::I16;
        deserialize_i32 => visit_i32(0), Format::I32;
        deserialize_i64 => visit_i64(0), Format::I64;
        deserialize_i128 => visit_i128(0), Format::I128;
        deserialize_u8 => visit_u8(0), Format::U8;
        deserialize_u16 => visit_u16(0), Format::U16;
        deserialize_u32 => visit_u32(0), Format::U32;
        deserialize_u64 => visit_u64(0), Format::U64;
        deserialize_u128 => visit_u128(0), Format::U128;
        deserialize_f32 => visit_f32(0.0), Format::F32;
        deserialize_f64 => visit_f64(0.0), Format::F64;
        deserialize_char => visit_char('\0'), Format::Char;
        deserialize_str => visit_str(""), Format::Str;
        deserialize_string => visit_string(String::new()), Format::Str;
        deserialize_bytes => visit_bytes(&[]), Format::Bytes;
        deserialize_byte_buf => visit_byte_buf(Vec::new()), Format::Bytes;
        deserialize_unit => visit_unit(), Format::Unit;
        deserialize_identifier => visit_str(""), Format::Str;
        deserialize_ignored_any => visit_unit(), Format::Unit;
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let c = self.child(format_args!("?"))?;
        let v = visitor.visit_some(c);
        self.back();
        let v = v?;
        let inner = self.take();
        self.set(|| Format::Option(Box::new(inner)));
        Ok(v)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let v = visitor.visit_unit()?;
        self.set(|| Format::UnitStruct(name.into()));
        Ok(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let c = self.child(format_args!(".0"))?;
        let v = visitor.visit_newtype_struct(c);
        self.back();
        let v = v?;
        let inner = self.take();
        self.set(|| Format::Newtype(name.into(), Box::new(inner)));
        Ok(v)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let mut acc = SeqOne {
            tracer: &self,
            left: 1,
            out: None,
        };
        let v = visitor.visit_seq(&mut acc)?;
        let inner = acc
            .out
            .take()
            .unwrap_or_else(|| Format::Unknown("a sequence whose elements were not read".into()));
        self.set(|| Format::Seq(Box::new(inner)));
        Ok(v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let (v, xs) = self.tuple(len, visitor)?;
        self.set(|| Format::Tuple(xs));
        Ok(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let (v, xs) = self.tuple(len, visitor)?;
        self.set(|| Format::TupleStruct(name.into(), xs));
        Ok(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let mut acc = OneEntry {
            tracer: &self,
            done: false,
            key: None,
            value: None,
        };
        let v = visitor.visit_map(&mut acc)?;
        let unread = || Format::Unknown("a map whose entries were not read".into());
        let (k, val) = (acc.key.take(), acc.value.take());
        self.set(|| {
            Format::Map(
                Box::new(k.unwrap_or_else(unread)),
                Box::new(val.unwrap_or_else(unread)),
            )
        });
        Ok(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let (v, s) = self.fields(fields, name, visitor)?;
        self.set(|| Format::Struct(name.into(), s));
        Ok(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        if variants.is_empty() {
            return Err(TraceError::Uncovered(format!(
                "enum {name} has no variants"
            )));
        }
        let i = self.choose(variants);
        let mut access = EnumTrace {
            tracer: &self,
            name: variants[i],
            body: None,
        };
        let v = visitor.visit_enum(&mut access)?;
        let body = access.body.take();
        self.set_enum(name, variants, i, body);
        Ok(v)
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// A sequence of one element (to trace `Vec<T>`'s element type).
struct SeqOne<'t, 'a, 'p> {
    tracer: &'t Tracer<'a, 'p>,
    left: usize,
    out: Option<Format>,
}

impl<'de> de::SeqAccess<'de> for &mut SeqOne<'_, '_, '_> {
    type Error = TraceError;
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, TraceError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let (v, f) = self.tracer.value(format_args!("[]"), seed)?;
        self.out = Some(f);
        Ok(Some(v))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct S {
        a: u32,
        #[serde(default)]
        b: String,
        c: Option<Vec<u8>>,
        #[serde(alias = "old_d")]
        d: (i64, bool),
        e: E,
        m: std::collections::BTreeMap<String, f64>,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum E {
        X,
        Y(u64),
        Z(u8, u8),
        W { inner: Box<E2> },
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum E2 {
        P,
        Q(char),
    }

    #[test]
    fn traces_fields_defaults_aliases_and_every_variant() {
        let d = describe::<S>();
        let text = d.render();
        assert_eq!(
            text,
            "S { a: u32, b: String (default), c: Option<Vec<u8>>, d: (i64, bool), e: enum E { X, Y(u64), Z(u8, u8), W { inner: enum E2 { P, Q(char) } } }, m: Map<String, f64> }"
        );
        let Format::Struct(_, s) = &d.format else {
            panic!("{text}")
        };
        let req: Vec<bool> = s.fields.iter().map(|f| f.required).collect();
        assert_eq!(req, [true, false, false, true, true, true]);
        assert_eq!(s.fields[3].aliases, ["old_d"]);
        assert!(!s.deny_unknown);
        assert_eq!(describe::<S>().hash, d.hash, "the hash is stable");
        assert_eq!(d.hash, fnv64(&crate::codec::encode(&d.format)));
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Strict {
        a: u8,
    }

    #[derive(Deserialize)]
    #[serde(tag = "t")]
    #[allow(dead_code)]
    enum Tagged {
        A { x: u8 },
    }

    #[test]
    fn deny_unknown_fields_is_seen_and_deserialize_any_is_not_covered() {
        let Format::Struct(_, s) = describe::<Strict>().format else {
            panic!()
        };
        assert!(s.deny_unknown);
        match describe::<Tagged>().format {
            Format::Unknown(why) => assert!(why.contains("deserialize_any"), "{why}"),
            f => panic!("{f}"),
        }
        match describe::<serde_json_like::Any>().format {
            Format::Unknown(why) => assert!(why.contains("deserialize_any"), "{why}"),
            f => panic!("{f}"),
        }
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum List {
        Cons(u8, Box<List>),
        Nil,
    }

    #[test]
    fn recursive_types_are_reported_not_covered() {
        match describe::<List>().format {
            Format::Unknown(why) => assert!(why.contains("recursive"), "{why}"),
            f => panic!("{f}"),
        }
    }

    // Tricky shapes for the probes that leave several fields out at once.

    /// Two structs whose field lists are equal (the compiler may merge the statics): one
    /// with a default, one without.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Merged {
        p: WithDefault,
        q: WithoutDefault,
        r: Generic<u8>,
        s: Generic<Option<u8>>,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct WithDefault {
        #[serde(default)]
        x: u8,
        y: u8,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct WithoutDefault {
        x: u8,
        y: u8,
    }

    /// One field list, two monomorphisations: `x` is required in `Generic<u8>` and optional
    /// in `Generic<Option<u8>>` (serde's missing-field path reads `None` for an Option).
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Generic<T> {
        x: T,
    }

    /// A field left out that holds a struct, followed by another struct: the replay must
    /// give the second struct its own keys.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Shifted {
        #[serde(default)]
        a: Option<Inner1>,
        e: Option<E2>,
        b: Inner2,
        #[serde(default)]
        c: Vec<Inner1>,
        d: Inner1,
    }

    #[derive(Deserialize, Default)]
    #[allow(dead_code)]
    struct Inner1 {
        i: u8,
        #[serde(default)]
        j: u8,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Inner2 {
        k: Option<u8>,
        l: u8,
    }

    #[derive(Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    #[allow(dead_code)]
    struct AllDefault {
        #[serde(alias = "u2")]
        u: u8,
        v: String,
    }

    /// A custom impl that refuses a map with any field absent by a custom error (not
    /// `missing_field`), and calls `b` optional: the probes that leave several fields out
    /// find it ambiguous and fall back to one field per run.
    #[allow(dead_code)]
    struct Picky {
        a: u8,
        b: u8,
    }

    impl<'de> Deserialize<'de> for Picky {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Picky, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Picky;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("Picky")
                }
                fn visit_map<M: de::MapAccess<'de>>(self, mut m: M) -> Result<Picky, M::Error> {
                    let (mut a, mut b) = (None, None);
                    while let Some(k) = m.next_key::<String>()? {
                        match k.as_str() {
                            "a" => a = Some(m.next_value()?),
                            "b" => b = Some(m.next_value()?),
                            _ => {
                                m.next_value::<de::IgnoredAny>()?;
                            }
                        }
                    }
                    match (a, b) {
                        (Some(a), b) => Ok(Picky {
                            a,
                            b: b.unwrap_or(0),
                        }),
                        (None, Some(_)) => Err(de::Error::missing_field("a")),
                        (None, None) => Err(de::Error::custom("empty")),
                    }
                }
            }
            d.deserialize_struct("Picky", &["a", "b"], V)
        }
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Mixed {
        D(Picky, Inner1),
        A(AllDefault),
        B {
            #[serde(alias = "old")]
            z: Inner2,
            w: Option<Strict>,
        },
        C(Shifted),
    }

    // compat_bench's types (`modules/common/compat_bench.rs`, version 2).
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Account {
        id: u64,
        owner: String,
        balance: i64,
        tags: Vec<String>,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Ledger {
        accounts: std::collections::BTreeMap<u64, Account>,
        seq: u64,
        label: Option<String>,
        #[serde(default)]
        audit: Vec<(u64, String)>,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Call {
        Get {
            id: u64,
        },
        Open(Account),
        Transfer {
            from: u64,
            to: u64,
            cents: i64,
            memo: Option<String>,
        },
        Close(u64),
        List,
        Audit {
            since: u64,
        },
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Reply {
        Account(Account),
        Ok,
        Ids(Vec<u64>),
        Error { code: u32, text: String },
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Cast {
        Tag { id: u64, tag: String },
        Reset,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Tick {
        Interest(u32),
        Snapshot { to: u64, full: bool },
    }

    /// The format and run count the probes that leave several fields out give, alone and
    /// within `describing` (shared impls), checked against one probe per field.
    fn same_as_one_field<T: DeserializeOwned>() -> (usize, usize) {
        let (oracle, one) = trace_counted::<T>(true);
        let (f, many) = trace_counted::<T>(false);
        assert_eq!(f, oracle, "{}", std::any::type_name::<T>());
        let shared = describing(|| trace_counted::<T>(false));
        assert_eq!(shared.0, oracle, "{}", std::any::type_name::<T>());
        (one, many)
    }

    #[test]
    fn probes_leaving_several_fields_out_describe_as_one_field_probes_do() {
        same_as_one_field::<S>();
        same_as_one_field::<E>();
        same_as_one_field::<Strict>();
        same_as_one_field::<Tagged>();
        same_as_one_field::<List>();
        same_as_one_field::<serde_json_like::Any>();
        same_as_one_field::<Merged>();
        same_as_one_field::<Shifted>();
        same_as_one_field::<AllDefault>();
        same_as_one_field::<Mixed>();
        same_as_one_field::<Vec<(Mixed, Option<Shifted>)>>();
        for t in [
            same_as_one_field::<Ledger>(),
            same_as_one_field::<Call>(),
            same_as_one_field::<Reply>(),
            same_as_one_field::<Cast>(),
            same_as_one_field::<Tick>(),
        ] {
            assert!(t.1 <= t.0, "{t:?}");
        }
    }

    #[test]
    fn probes_find_defaults_per_impl_and_past_a_field_left_out() {
        let text = describe::<Merged>().render();
        assert_eq!(
            text,
            "Merged { p: WithDefault { x: u8 (default), y: u8 }, q: WithoutDefault { x: u8, y: u8 }, r: Generic { x: u8 }, s: Generic { x: Option<u8> } }"
        );
        let Format::Struct(_, m) = describe::<Merged>().format else {
            panic!()
        };
        let Format::Struct(_, r) = &m.fields[2].format else {
            panic!()
        };
        let Format::Struct(_, s) = &m.fields[3].format else {
            panic!()
        };
        assert!(r.fields[0].required);
        assert!(!s.fields[0].required);
        assert_eq!(
            describe::<Shifted>().render(),
            "Shifted { a: Option<Inner1 { i: u8, j: u8 (default) }>, e: Option<enum E2 { P, Q(char) }>, b: Inner2 { k: Option<u8>, l: u8 }, c: Vec<Inner1 { i: u8, j: u8 (default) }> (default), d: Inner1 { i: u8, j: u8 (default) } }"
        );
        let Format::Struct(_, s) = describe::<Shifted>().format else {
            panic!()
        };
        let req: Vec<bool> = s.fields.iter().map(|f| f.required).collect();
        assert_eq!(req, [false, false, true, false, true]);
    }

    #[test]
    fn a_module_describe_runs_fewer_traces() {
        fn all(one_field: bool) -> usize {
            let run = || {
                trace_counted::<Ledger>(one_field).1
                    + trace_counted::<Call>(one_field).1
                    + trace_counted::<Reply>(one_field).1
                    + trace_counted::<Cast>(one_field).1
                    + trace_counted::<Tick>(one_field).1
            };
            if one_field {
                run()
            } else {
                describing(run)
            }
        }
        let (before, after) = (all(true), all(false));
        // One exploring run per variant (15), then one probe per field (28) before; one
        // probe per required field of each impl (17) and one per struct with optional
        // fields left (2) after, `Account` probed once for the three types that hold it.
        assert_eq!((before, after), (43, 34));
    }

    mod serde_json_like {
        /// A value that takes anything (as `serde_json::Value` does).
        pub struct Any;
        impl<'de> serde::Deserialize<'de> for Any {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Any, D::Error> {
                d.deserialize_any(serde::de::IgnoredAny).map(|_| Any)
            }
        }
    }
}
