//! The `hotswap` command: run a node from a release directory (`hotswap start`), control a
//! running node (`hotswap ping`, `status`, `load`, `purge`, `suspend`, ... see
//! [`control`]), and the live-upgrade demo (`hotswap demo`).

mod check;
mod control;
mod demo;
mod describe;
mod os;
mod project;
mod report;
mod start;
mod top;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub(crate) use hotswap_runtime::release;

use control::client::{self, Cmd, Sup, Target};

/// The node's allocator. Modules keep their own (glibc's): no allocation ever changes owner
/// across the module boundary, so each side may choose.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Erlang/OTP-style hot code loading for native Rust.
#[derive(Debug, Parser)]
#[command(name = "hotswap", version, about, long_about = None, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `hotswap ports` and its actions on a listener.
#[derive(Args, Debug)]
struct PortsArgs {
    /// Stop accepting on the listener PORT (its id, `#Port<0.N>`, or its label): open
    /// connections are untouched; new ones wait in the kernel's backlog.
    #[arg(long, value_name = "PORT", conflicts_with_all = ["resume_accepting", "drain"])]
    pause_accepting: Option<String>,
    /// Accept again on the listener PORT.
    #[arg(long, value_name = "PORT", conflicts_with = "drain")]
    resume_accepting: Option<String>,
    /// Drain the listener PORT: stop accepting, then wait until every connection it
    /// accepted has closed (at most --drain-limit). Exit status 1 (`not_drained`) if some
    /// are still open then. The listener stays paused either way.
    #[arg(long, value_name = "PORT")]
    drain: Option<String>,
    /// How long --drain waits, in seconds (kept under --timeout).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    drain_limit: f64,
    #[command(flatten)]
    ctl: Ctl,
}

/// How to reach a running node (the options of every control command).
#[derive(Debug, Args)]
struct Ctl {
    /// The node's release directory.
    #[arg(
        short = 'd',
        long = "dir",
        env = "HOTSWAP_DIR",
        default_value = ".",
        value_name = "DIR"
    )]
    dir: PathBuf,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
    /// The node's cookie (default: the contents of DIR/run/cookie).
    #[arg(
        long,
        env = "HOTSWAP_COOKIE",
        hide_env_values = true,
        value_name = "COOKIE"
    )]
    cookie: Option<String>,
    /// How long to wait for the node's answer, in seconds.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    timeout: f64,
}

impl Ctl {
    fn target(&self) -> Result<Target, String> {
        if !(self.timeout.is_finite() && self.timeout > 0.0 && self.timeout <= 86_400.0) {
            return Err(format!(
                "--timeout {}: give a number of seconds between 0 and 86400",
                self.timeout
            ));
        }
        Ok(Target {
            dir: release::ReleaseDir::new(&self.dir),
            cookie: self.cookie.clone(),
            timeout: Duration::from_secs_f64(self.timeout),
            json: self.json,
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a project: a cargo workspace with one module crate (a gen_server), a project
    /// file (Hotswap.toml) describing its release, a README, a .gitignore and the SDK
    /// (vendor/). `cargo build` and `cargo test` work in it at once.
    New {
        /// The project's name (and directory).
        name: String,
        /// Where to create it (default: the current directory).
        #[arg(long, value_name = "DIR", default_value = ".")]
        path: PathBuf,
    },
    /// Run the project on a node and keep it current: every save (of any local crate the
    /// module crates depend on, or Hotswap.toml) builds the modules and upgrades the node
    /// through the release transaction, gen_server states kept by code_change. One line
    /// per save with the time of each phase.
    Dev {
        /// A directory of the project (default: the current one).
        #[arg(long, short = 'p', value_name = "DIR", default_value = ".")]
        project: PathBuf,
        /// Restart the processes of changed modules (through their supervisors) instead
        /// of migrating their states: for changes the check refuses.
        #[arg(long)]
        restart: bool,
        /// Build without network access (cargo --offline).
        #[arg(long)]
        offline: bool,
        /// How long the files must stay quiet after a save before the build starts, in
        /// milliseconds (at most 50).
        #[arg(long, default_value_t = 30, value_name = "MS")]
        debounce_ms: u64,
    },
    /// Build a release of the project: `cargo build --release` of its module crates,
    /// libraries copied to OUT/lib/MODULE-VSN-HASH.so, OUT/releases/VSN/release.toml
    /// written from Hotswap.toml; older releases in OUT are kept. Refused if a module's code
    /// changed but not its version. Prints the upgrade from the previous release.
    Release {
        /// A directory of the project (default: the current one).
        #[arg(long, short = 'p', value_name = "DIR", default_value = ".")]
        project: PathBuf,
        /// The release directory to write to (default: PROJECT/_release).
        #[arg(long, short = 'o', value_name = "DIR")]
        out: Option<PathBuf>,
        /// Build without network access (cargo --offline).
        #[arg(long)]
        offline: bool,
    },
    /// Watch a networked service upgraded as releases under live TCP traffic: boot the
    /// embedded release `chat` 1.0.0 (three chat servers), drive 120 TCP clients against it,
    /// upgrade to 2.0.0 (the state type changes), attempt 3.0.0 (refused: its code_change
    /// fails on one server), downgrade to 1.0.0 and upgrade back; then check that no
    /// connection dropped, no frame was lost or duplicated, every server's state matches
    /// what its clients sent, and the replaced versions are unmapped.
    ///
    /// Exit status: 0 when every check passes, 1 when one fails (the output says which), 2
    /// when the demo cannot start (e.g. the module libraries are not built).
    Demo {
        /// Print one JSON object per step (one per line) instead of text.
        #[arg(long)]
        json: bool,
        /// Print more detail: each plan, each upgrade's phases, each server's state check.
        #[arg(long, short = 'v')]
        verbose: bool,
        /// Directory holding the module libraries (libchat_v1.so, libchat_v2.so,
        /// libchat_v3.so). Default: the directory of this executable (target/debug or
        /// target/release after a cargo build).
        #[arg(long, value_name = "DIR")]
        modules_dir: Option<PathBuf>,
        /// Instead of running the demo, write its three releases (a release directory for
        /// `hotswap start`, `upgrade`, `unpack`) and a replay script (replay.sh) to DIR,
        /// which must be new or empty, and print how to replay the story by hand.
        #[arg(long, value_name = "DIR")]
        release_dir: Option<PathBuf>,
    },
    /// The demo's TCP clients against a running demo release (`hotswap demo
    /// --release-dir`): connections to every chat server, each publishing numbered frames
    /// and checking every frame that comes back. Prints what they saw at the end.
    ///
    /// Exit status: 0 when nothing was dropped, lost, duplicated or reordered, 1 otherwise,
    /// 2 for bad arguments or when the servers cannot be reached.
    DemoClient {
        /// The chat servers' addresses (default: the node's tcp listeners, from `ports`).
        #[arg(long, value_delimiter = ',', value_name = "ADDR,...")]
        addr: Vec<std::net::SocketAddr>,
        /// How long to send, in seconds.
        #[arg(long, default_value_t = 10.0, value_name = "SECS")]
        secs: f64,
        /// Connections per server.
        #[arg(long, default_value_t = 40, value_name = "N")]
        conns: usize,
        /// Frames per second per connection.
        #[arg(long, default_value_t = 25.0, value_name = "N")]
        rate: f64,
        /// Connections per room.
        #[arg(long, default_value_t = 4, value_name = "N")]
        room_size: usize,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// Run a node from a release directory, in the foreground until `hotswap stop`, SIGTERM
    /// or Ctrl-C (or in the background with --background). It prints a line starting with
    /// "node started:" once it is ready.
    Start {
        /// The release directory (see the README's "Release directory").
        #[arg(value_name = "RELEASE_DIR")]
        dir: PathBuf,
        /// The release version to boot (default: the one releases/current names, or the
        /// only one).
        #[arg(long, value_name = "VERSION")]
        release_version: Option<String>,
        /// Run in the background: return once the node is ready (its pid is in run/node.pid).
        #[arg(long, short = 'b')]
        background: bool,
        /// Internal: this is the background node itself.
        #[arg(long, hide = true)]
        detached: bool,
    },
    /// Check that the node answers: prints "pong".
    Ping(Ctl),
    /// Print the node's OS pid.
    Pid(Ctl),
    /// Stop the node gracefully and wait until its OS process has exited.
    Stop(Ctl),
    /// Release, uptime, processes, modules, memory.
    Status(Ctl),
    /// Every process: pid, name, application, the module version it runs, queue, memory.
    Processes(Ctl),
    /// Every module: current and old version, the processes on each, pinned versions and why.
    Modules(Ctl),
    /// Every port (socket) of the node: type, owner, addresses, bytes and messages in/out,
    /// queue sizes, active mode; or, with an option, pause, resume or drain a listener.
    Ports(PortsArgs),
    /// A live view of the node in the terminal, refreshed every second: processes (sorted
    /// by memory, queue length or activity), modules with their current and old versions
    /// and the processes on each, ports, and an upgrade in progress as a progress bar with
    /// its phase. Keys: q quits; m, l, a, p sort by memory, queue length, activity, pid;
    /// r reverses the order.
    ///
    /// Needs a terminal on stdout, unless --once (one frame as plain text; with --json,
    /// the node's snapshot as JSON).
    Top {
        /// Print one frame and exit (for scripts, and stdout that is not a terminal).
        #[arg(long)]
        once: bool,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0, value_name = "SECS")]
        interval: f64,
        /// Columns of the --once frame (default: the terminal's width, else 100).
        #[arg(long, value_name = "COLUMNS")]
        width: Option<u16>,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// Load a module library; its current version becomes old. Refused (not_purged) while
    /// old code exists, unless --purging.
    Load {
        /// The library file (libNAME.so, built by the module crate).
        library: PathBuf,
        /// Purge old code first (killing the processes still running it), then load.
        #[arg(long)]
        purging: bool,
        /// Load even if the compatibility check refuses it (the new version's server
        /// could not read the current version's state or queued messages).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// Check that a new version of a module can read what the old one wrote (its
    /// gen_server's state and queued calls, casts and messages; its exports' arguments),
    /// without a node: `hotswap check OLD.so NEW.so`, for CI. A library with a valid
    /// description record beside it (LIB.so.schema, see `hotswap describe`) is checked from
    /// the record, without opening it; the output says where each description came from.
    /// With --node, check NEW.so against the running node's current version instead,
    /// including a dry run of its code_change on a copy of every live state of the module.
    ///
    /// Exit status: 0 compatible; 1 incompatible; 2 usage error; 3 the node could not be
    /// asked (--node); 4 a library could not be read, opened or described; 5 nothing
    /// incompatible found but something could not be checked (the report says what, why).
    Check {
        /// OLD.so NEW.so (or only NEW.so with --node).
        #[arg(value_name = "LIBRARY", num_args = 1..=2, required = true)]
        libraries: Vec<PathBuf>,
        /// Check against the running node (its current version and live states).
        #[arg(long)]
        node: bool,
        /// Also refuse what a later downgrade could not read (the old version reading the
        /// new one's state and messages).
        #[arg(long)]
        downgrade: bool,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// Print what a module library says about its types (the description the
    /// compatibility check compares) and whether its description record is there. With
    /// --write, record the description beside it (LIB.so.schema): a node loading these
    /// exact bytes then compares the record instead of running the module's describe.
    /// `hotswap release` and `hotswap dev` write the records of their libraries.
    ///
    /// Exit status: 0 described (and recorded); 1 the record could not be written; 2 usage
    /// error; 4 the library could not be read, opened or described.
    Describe {
        /// The library file (libNAME.so).
        library: PathBuf,
        /// Write the description record beside the library (LIB.so.schema).
        #[arg(long)]
        write: bool,
        /// Print JSON: the module, the library's hash, the record's path and status, and
        /// the description.
        #[arg(long)]
        json: bool,
    },
    /// Free a module's old code, killing the processes still running it.
    Purge {
        /// The module.
        module: String,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// Free a module's old code only if no process runs it (refused otherwise, naming them).
    SoftPurge {
        /// The module.
        module: String,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// Make a module's current code old (nothing new can start in it).
    Delete {
        /// The module.
        module: String,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// Which processes run a module's old code (and its current code).
    Which {
        /// The module.
        module: String,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// sys:suspend a gen_server (pid or registered name): it handles only system messages
    /// until resumed; other messages wait in its mailbox.
    Suspend {
        /// A pid (<0.12>, 0.12 or 12) or a registered name.
        target: String,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// sys:resume a suspended gen_server.
    Resume {
        /// A pid (<0.12>, 0.12 or 12) or a registered name.
        target: String,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// sys:get_state: print a gen_server's state as JSON.
    GetState {
        /// A pid (<0.12>, 0.12 or 12) or a registered name.
        target: String,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// gen_server:call: send a request (JSON: an enum variant is "Get" or {"Add": 2}) to
    /// a gen_server and print its reply as JSON; with --cast, gen_server:cast.
    Call {
        /// A pid (<0.12>, 0.12 or 12) or a registered name.
        target: String,
        /// The request, as JSON (default: null, the unit value).
        #[arg(default_value = "null")]
        request: String,
        /// Cast instead of call (no reply).
        #[arg(long)]
        cast: bool,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// sys:change_code: a suspended gen_server's state is rebuilt by the current version's
    /// code_change (load the new version first; resume afterwards).
    ChangeCode {
        /// A pid (<0.12>, 0.12 or 12) or a registered name.
        target: String,
        /// The module.
        module: String,
        /// The version the state was made by.
        old_vsn: String,
        /// `extra` for code_change, as JSON.
        #[arg(long, value_name = "JSON")]
        extra: Option<String>,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// supervisor:which_children and count_children: a supervisor's children (latest
    /// started first) with their ids, pids (or restarting/undefined), types and modules.
    Children {
        /// The supervisor: a pid (<0.12>, 0.12 or 12) or a registered name.
        #[arg(required_unless_present = "app", conflicts_with = "app")]
        sup: Option<String>,
        /// The top supervisor of this application instead.
        #[arg(long, value_name = "NAME")]
        app: Option<String>,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// supervisor:terminate_child: stop a child by its shutdown rule; its spec is kept
    /// (unless it is temporary), so restart-child starts it again.
    TerminateChild(ChildArgs),
    /// supervisor:restart_child: start a terminated child again from its spec.
    RestartChild(ChildArgs),
    /// supervisor:delete_child: remove a terminated child's spec.
    DeleteChild(ChildArgs),
    /// The releases of the node's directory and their states (unpacked, current,
    /// permanent, old); the one running is marked.
    Releases(Ctl),
    /// Add a release to the node's directory from a package (a directory holding
    /// `releases/<vsn>/release.toml` and the libraries it names, or a .tar.gz of one), after
    /// checking it: manifest valid, every library a hotswap module with the declared name
    /// and version, no file of another release overwritten.
    Unpack {
        /// The package: a directory or a .tar.gz.
        package: PathBuf,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// Move the running node to another release (newer: an upgrade; older: a downgrade)
    /// in one transaction: check (touching nothing), suspend, code_change, commit, resume.
    /// Any failure rolls back: old code current, old states back, every process resumed.
    Upgrade {
        /// The target release version.
        version: String,
        /// Print the plan (modules, processes, steps in order) and change nothing.
        #[arg(long)]
        plan: bool,
        /// Make the release permanent once the upgrade succeeded.
        #[arg(long)]
        permanent: bool,
        /// The suspend time limit of every process, in milliseconds (default: each
        /// module's `[upgrade]` timeout_ms, else 5000).
        #[arg(long, value_name = "MS")]
        suspend_timeout_ms: Option<u64>,
        /// Upgrade even if the types check finds that a changed module's new version
        /// cannot read what the running one wrote (as `load --force`).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// The upgrade in progress: phase, processes done of N, elapsed.
    UpgradeStatus(Ctl),
    /// Make a release (default: the running one, which must be current) what a restart
    /// boots.
    MakePermanent {
        /// The release version.
        version: Option<String>,
        #[command(flatten)]
        ctl: Ctl,
    },
    /// Delete a release and the library files no other release uses (refused for the
    /// permanent and the running release).
    RemoveRelease {
        /// The release version.
        version: String,
        #[command(flatten)]
        ctl: Ctl,
    },
}

/// A supervisor and one of its children.
#[derive(Debug, Args)]
struct ChildArgs {
    /// The supervisor: a pid (<0.12>, 0.12 or 12) or a registered name. With --app, give
    /// only CHILD.
    #[arg(value_name = "SUP")]
    sup: String,
    /// The child's id (terminate-child also takes the child's pid).
    #[arg(value_name = "CHILD")]
    child: Option<String>,
    /// The supervisor is this application's top supervisor.
    #[arg(long, value_name = "NAME")]
    app: Option<String>,
    #[command(flatten)]
    ctl: Ctl,
}

impl ChildArgs {
    /// The supervisor and the child, or what is wrong with the arguments.
    fn split(self, cmd: &str) -> Result<(Ctl, Sup, String), String> {
        match (self.app, self.child) {
            (Some(app), None) => Ok((self.ctl, Sup::App(app), self.sup)),
            (None, Some(child)) => Ok((self.ctl, Sup::Target(self.sup), child)),
            (Some(_), Some(_)) => Err(format!(
                "{cmd} --app NAME takes only the child (the supervisor is the application's top supervisor)"
            )),
            (None, None) => Err(format!(
                "{cmd} needs the supervisor and the child: `hotswap {cmd} <SUP> <CHILD>` or `hotswap {cmd} --app <NAME> <CHILD>`"
            )),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (ctl, cmd) = match cli.command {
        Command::New { name, path } => {
            return match project::new::create(&path, &name) {
                Ok(root) => {
                    println!("created project {name} in {}", root.display());
                    println!("  cd {} && cargo build && cargo test", root.display());
                    println!("  hotswap dev        run it; every save upgrades the running node");
                    println!("  hotswap release    build a release into _release/");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dev {
            project,
            restart,
            offline,
            debounce_ms,
        } => {
            if debounce_ms > 50 {
                return usage("--debounce-ms: at most 50 (a save should not wait longer)");
            }
            init_logging();
            return project::dev::run(project::dev::Options {
                project,
                restart,
                offline,
                debounce: Duration::from_millis(debounce_ms),
            });
        }
        Command::Release {
            project,
            out,
            offline,
        } => {
            init_logging();
            return project::build::run(project::build::Options {
                project,
                out,
                offline,
            });
        }
        Command::Demo {
            json,
            verbose,
            modules_dir,
            release_dir,
        } => {
            // The demo reports what happens itself (the runtime's warnings, e.g. the types
            // check's notes on the deliberate state change, would only repeat it): errors only,
            // unless RUST_LOG says otherwise.
            init_logging_at("error");
            return demo::run(demo::Options {
                json,
                verbose,
                modules_dir,
                release_dir,
            });
        }
        Command::DemoClient {
            addr,
            secs,
            conns,
            rate,
            room_size,
            ctl,
        } => {
            init_logging();
            let target = match ctl.target() {
                Ok(t) => t,
                Err(e) => return usage(&e),
            };
            return demo::client::run(demo::client::Options {
                addrs: addr,
                secs,
                conns,
                rate,
                room_size,
                target,
            });
        }
        Command::Start {
            dir,
            release_version,
            background,
            detached,
        } => {
            return start::run(start::Options {
                dir,
                release_version,
                background,
                detached,
            })
        }
        Command::Top {
            once,
            interval,
            width,
            ctl,
        } => {
            if !(interval.is_finite() && (0.1..=3600.0).contains(&interval)) {
                return usage(&format!(
                    "--interval {interval}: give a number of seconds between 0.1 and 3600"
                ));
            }
            return match ctl.target() {
                Ok(target) => top::run(top::Options {
                    target,
                    once,
                    interval: Duration::from_secs_f64(interval),
                    width,
                }),
                Err(e) => usage(&e),
            };
        }
        Command::Ping(c) => (c, Cmd::Ping),
        Command::Pid(c) => (c, Cmd::Pid),
        Command::Stop(c) => (c, Cmd::Stop),
        Command::Status(c) => (c, Cmd::Status),
        Command::Processes(c) => (c, Cmd::Processes),
        Command::Modules(c) => (c, Cmd::Modules),
        Command::Ports(a) => {
            use control::ports::Action;
            let action = match (a.pause_accepting, a.resume_accepting, a.drain) {
                (Some(port), _, _) => Some(Action::Pause { port, pause: true }),
                (_, Some(port), _) => Some(Action::Pause { port, pause: false }),
                (_, _, Some(port)) => match Duration::try_from_secs_f64(a.drain_limit) {
                    Ok(limit) => Some(Action::Drain { port, limit }),
                    Err(_) => {
                        return usage(&format!(
                            "--drain-limit {} is not a number of seconds",
                            a.drain_limit
                        ))
                    }
                },
                _ => None,
            };
            (a.ctl, Cmd::Ports(action))
        }
        Command::Load {
            library,
            purging,
            force,
            ctl,
        } => (
            ctl,
            Cmd::Load {
                path: library,
                purging,
                force,
            },
        ),
        Command::Check {
            libraries,
            node,
            downgrade,
            ctl,
        } => match (node, libraries.as_slice()) {
            (false, [old, new]) => {
                return check::run(&check::Options {
                    old,
                    new,
                    json: ctl.json,
                    downgrade,
                })
            }
            (true, [new]) => (
                ctl,
                Cmd::Check {
                    path: new.clone(),
                    downgrade,
                },
            ),
            (false, _) => {
                return usage("check needs two libraries: `hotswap check OLD.so NEW.so` (or `hotswap check --node NEW.so`)")
            }
            (true, _) => {
                return usage("check --node takes one library (the node's current version is the old one)")
            }
        },
        Command::Describe {
            library,
            write,
            json,
        } => {
            return describe::run(&describe::Options {
                library: &library,
                write,
                json,
            })
        }
        Command::Purge { module, ctl } => (ctl, Cmd::Purge(module)),
        Command::SoftPurge { module, ctl } => (ctl, Cmd::SoftPurge(module)),
        Command::Delete { module, ctl } => (ctl, Cmd::Delete(module)),
        Command::Which { module, ctl } => (ctl, Cmd::Which(module)),
        Command::Suspend { target, ctl } => (ctl, Cmd::Suspend(target)),
        Command::Resume { target, ctl } => (ctl, Cmd::Resume(target)),
        Command::GetState { target, ctl } => (ctl, Cmd::GetState(target)),
        Command::ChangeCode {
            target,
            module,
            old_vsn,
            extra,
            ctl,
        } => {
            let extra = match extra.map(|e| serde_json::from_str(&e).map_err(|err| (e, err))) {
                None => None,
                Some(Ok(v)) => Some(v),
                Some(Err((e, err))) => {
                    eprintln!("error: --extra {e:?} is not JSON: {err}");
                    return ExitCode::from(2);
                }
            };
            (
                ctl,
                Cmd::ChangeCode {
                    target,
                    module,
                    old_vsn,
                    extra,
                },
            )
        }
        Command::Call {
            target,
            request,
            cast,
            ctl,
        } => match serde_json::from_str(&request) {
            Ok(request) => (
                ctl,
                Cmd::Call {
                    target,
                    request,
                    cast,
                },
            ),
            Err(e) => return usage(&format!("the request {request:?} is not JSON: {e}")),
        },
        Command::Children { sup, app, ctl } => {
            let sup = match (sup, app) {
                (_, Some(a)) => Sup::App(a),
                (Some(t), None) => Sup::Target(t),
                (None, None) => unreachable!("clap requires the supervisor or --app"),
            };
            (ctl, Cmd::Children(sup))
        }
        Command::TerminateChild(a) => match a.split("terminate-child") {
            Ok((ctl, sup, child)) => (ctl, Cmd::TerminateChild { sup, child }),
            Err(e) => return usage(&e),
        },
        Command::RestartChild(a) => match a.split("restart-child") {
            Ok((ctl, sup, child)) => (ctl, Cmd::RestartChild { sup, child }),
            Err(e) => return usage(&e),
        },
        Command::DeleteChild(a) => match a.split("delete-child") {
            Ok((ctl, sup, child)) => (ctl, Cmd::DeleteChild { sup, child }),
            Err(e) => return usage(&e),
        },
        Command::Releases(c) => (c, Cmd::Releases),
        Command::Unpack { package, ctl } => (ctl, Cmd::Unpack(package)),
        Command::Upgrade {
            version,
            plan,
            permanent,
            suspend_timeout_ms,
            force,
            ctl,
        } => (
            ctl,
            Cmd::Upgrade {
                version,
                plan,
                permanent,
                suspend_timeout_ms,
                force,
            },
        ),
        Command::UpgradeStatus(c) => (c, Cmd::UpgradeStatus),
        Command::MakePermanent { version, ctl } => (ctl, Cmd::MakePermanent(version)),
        Command::RemoveRelease { version, ctl } => (ctl, Cmd::RemoveRelease(version)),
    };
    match ctl.target() {
        Ok(t) => client::run(&t, &cmd),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// A usage error that clap cannot see: said on stderr, exit status 2 (as clap's own).
fn usage(e: &str) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// Runtime logs go to stderr; `RUST_LOG` selects them (default: warnings and errors).
fn init_logging() {
    init_logging_at("warn");
}

/// Runtime logs go to stderr; `RUST_LOG` selects them (default: `level` and above).
fn init_logging_at(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
