//! `hotswap new <name>`: a ready project (a cargo workspace with one module crate, a
//! project file, a README, a `.gitignore`, the SDK vendored).

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{sdk, PROJECT_FILE};

/// Create the project `name` in `parent/name`. The paths written, for the summary.
pub(crate) fn create(parent: &Path, name: &str) -> Result<std::path::PathBuf> {
    check_name(name)?;
    let module = name.replace('-', "_");
    let root = parent.join(name);
    if root.exists() {
        bail!(
            "{} exists already: choose another name or remove it",
            root.display()
        );
    }
    let files: Vec<(String, String)> = vec![
        ("Cargo.toml".into(), workspace_manifest()),
        (PROJECT_FILE.into(), project_file(name, &module)),
        ("README.md".into(), readme(name, &module)),
        (".gitignore".into(), "/target\n/_release\n".into()),
        (
            format!("modules/{module}/Cargo.toml"),
            module_manifest(&module),
        ),
        (
            format!("modules/{module}/src/lib.rs"),
            module_source(&module),
        ),
        ("Cargo.lock".into(), sdk::lock().into()),
    ];
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    for (rel, text) in files {
        let p = root.join(&rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    sdk::write_vendor(&root.join("vendor"))?;
    Ok(root)
}

/// A project name is a cargo package name: ASCII letters, digits, `-` and `_`, starting
/// with a letter.
fn check_name(name: &str) -> Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && ![
            "test",
            "hotswap",
            "hotswap-abi",
            "hotswap-macros",
            "hotswap_abi",
            "hotswap_macros",
        ]
        .contains(&name);
    if !ok {
        bail!(
            "{name:?} is not a usable project name: use ASCII letters, digits, `-` and `_`, starting with a letter (and not `test` or an SDK crate's name)"
        );
    }
    Ok(())
}

fn workspace_manifest() -> String {
    r#"[workspace]
resolver = "2"
members = ["modules/*"]
# The hotswap SDK, vendored (it is not published): a path dependency of the modules.
exclude = ["vendor"]

# What `hotswap release` builds: lean shared libraries (a node copies and maps each one).
[profile.release]
strip = "debuginfo"

# What `hotswap dev` builds on every save: fast incremental builds.
[profile.hotswap-dev]
inherits = "dev"
debug = 0
strip = "debuginfo"
incremental = true
"#
    .into()
}

fn project_file(name: &str, module: &str) -> String {
    format!(
        r#"# The release this project builds: `hotswap release` writes it to _release/,
# `hotswap dev` runs it and keeps it current as you save.

[release]
name = "{name}"
version = "0.1.0"           # bump for every release you ship
# modules = ["{module}"]    # the module crates, in load order (default: every cdylib crate)

[node]
log_level = "info"

# An application is a supervision tree, started in order (see the hotswap README,
# "Running a node: the release directory", for every key).
[[application]]
name = "{name}"
start = [
  # A gen_server of module `{module}`, started with init(0), registered as "{module}".
  {{ server = "{module}", arg = 0, name = "{module}" }},
]
"#
    )
}

fn module_manifest(module: &str) -> String {
    format!(
        r#"[package]
name = "{module}"
version = "0.1.0"           # the module's version: bump it when its code changes for a release
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
hotswap = {{ path = "../../vendor/hotswap" }}
serde = {{ version = "1", features = ["derive"] }}
"#
    )
}

fn module_source(module: &str) -> String {
    format!(
        r#"//! Module `{module}`: a gen_server that counts. Edit it while `hotswap dev` runs: every
//! save builds it and upgrades the running node, the state kept.

use hotswap::gen_server::{{CallResult, Caller, CastResult, Extra, GenServer, Init, OldState}};
use hotswap::Ctx;
use serde::{{Deserialize, Serialize}};

/// The server's state. Change it as you like: `code_change` builds it from the state the
/// running version made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counter {{
    /// The count.
    pub count: u64,
}}

/// Calls: the caller waits for the reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Call {{
    /// The count.
    Get,
    /// Add to the count; the reply is the new count.
    Add(u64),
}}

/// Casts: no reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Cast {{
    /// Back to zero.
    Reset,
}}

impl Counter {{
    /// What a call does (kept apart from the callback so that tests can run it).
    pub fn call(&mut self, req: Call) -> u64 {{
        match req {{
            Call::Get => self.count,
            Call::Add(n) => {{
                self.count += n;
                self.count
            }}
        }}
    }}

    /// What a cast does.
    pub fn cast(&mut self, msg: Cast) {{
        match msg {{
            Cast::Reset => self.count = 0,
        }}
    }}
}}

impl GenServer for Counter {{
    type Arg = u64;
    type Call = Call;
    type Reply = u64;
    type Cast = Cast;
    type Info = ();

    async fn init(_ctx: Ctx, start: u64) -> Init<Self> {{
        Init::Ok(Counter {{ count: start }})
    }}

    async fn handle_call(&mut self, _ctx: Ctx, req: Call, _from: Caller) -> CallResult<u64> {{
        CallResult::Reply(self.call(req))
    }}

    async fn handle_cast(&mut self, _ctx: Ctx, msg: Cast) -> CastResult {{
        self.cast(msg);
        CastResult::NoReply
    }}

    /// Build this version's state from the state another version made (its fields by
    /// name). When you change `Counter`, decode the old shape here and convert it.
    fn code_change(old: OldState<'_>, _extra: Option<Extra<'_>>) -> Result<Self, String> {{
        old.decode::<Counter>().map_err(|e| e.to_string())
    }}
}}

// The module: its name, and the gen_server it runs. Its version is the crate's.
hotswap::module! {{ name: "{module}", gen_server: Counter }}

#[cfg(test)]
mod tests {{
    use super::*;

    #[test]
    fn calls_count() {{
        let mut s = Counter {{ count: 1 }};
        assert_eq!(s.call(Call::Add(2)), 3);
        assert_eq!(s.call(Call::Get), 3);
    }}

    #[test]
    fn reset_cast_zeroes() {{
        let mut s = Counter {{ count: 5 }};
        s.cast(Cast::Reset);
        assert_eq!(s.call(Call::Get), 0);
    }}

    #[test]
    fn code_change_keeps_the_count() {{
        let bytes = hotswap::codec::encode(&Counter {{ count: 7 }});
        let old = OldState {{
            vsn: "0.1.0",
            bytes: &bytes,
            direction: hotswap::gen_server::Direction::Up,
        }};
        assert_eq!(Counter::code_change(old, None), Ok(Counter {{ count: 7 }}));
    }}
}}
"#
    )
}

fn readme(name: &str, module: &str) -> String {
    format!(
        r#"# {name}

A [hotswap](https://example.invalid/hotswap) project: Rust modules a running node
replaces without stopping, their state kept.

| path | what |
|---|---|
| `{PROJECT_FILE}` | the release: its name and version, node settings, applications (supervision trees) |
| `modules/{module}/` | module `{module}`: a gen_server (`src/lib.rs`) |
| `vendor/` | the hotswap SDK (not published, so vendored) |

```sh
cargo build && cargo test       # an ordinary cargo workspace
hotswap dev                     # run the node; every save upgrades it, the state kept
hotswap call {module} '{{"Add": 2}}'   # in another terminal: call the server
hotswap release                 # build release {name} into _release/ (bump versions first)
```

A release is a directory (`_release/`): `releases/<version>/release.toml` and `lib/`,
every release side by side. Copy it to a server and `hotswap start _release`; later
`hotswap unpack` a newer one into the running node and `hotswap upgrade <version>`.
"#
    )
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_are_checked() {
        assert!(check_name("shop").is_ok());
        assert!(check_name("my-shop_2").is_ok());
        for bad in ["", "2shop", "sh op", "../x", "hotswap", "test"] {
            assert!(check_name(bad).is_err(), "{bad} accepted");
        }
    }
}
