//! `hotswap top`: a live view of a running node in the terminal.
//!
//! Once a second (`--interval`) it asks the node for one snapshot (the control command
//! `top`: processes, modules, ports and the upgrade in progress, read from the node's own
//! tables without asking any process) and draws it with ratatui:
//!
//! * a header: the release, the node's OS pid, uptime, process count, resident memory;
//! * the upgrade in progress: its phases with the current one marked, and a bar of the
//!   processes done in that phase (`code_change 3/6`);
//! * the processes, sorted by memory, queue length, activity (messages taken per second
//!   since the previous refresh) or pid;
//! * the modules with their current and old versions and the processes on each, and the
//!   ports.
//!
//! Keys: `q` (or Esc, Ctrl-C; or SIGTERM, SIGHUP) quits, leaving the terminal as it was; `m`, `l`, `a`, `p`
//! sort by memory, queue length, activity, pid; `r` reverses the order. The footer line
//! says so. Without a terminal on stdout it refuses (exit 2) unless `--once` is given,
//! which prints one frame as plain text (with `--json`, the node's snapshot as JSON).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Gauge, Paragraph, Row, Table};
use ratatui::{Frame, Terminal};
use serde_json::Value;

use crate::control::client::{self, Failure, Target, EXIT_REFUSED, EXIT_UNREACHABLE};

/// How `hotswap top` runs.
#[derive(Debug)]
pub struct Options {
    /// The node.
    pub target: Target,
    /// Print one frame and exit instead of the live view.
    pub once: bool,
    /// Time between refreshes.
    pub interval: Duration,
    /// Width of the `--once` frame (default: the terminal's, else 100 columns).
    pub width: Option<u16>,
}

/// The phases of a release upgrade, in order (`rollback` replaces the rest on a failure).
const PHASES: &[&str] = &[
    "plan",
    "check",
    "suspend",
    "code_change",
    "commit",
    "applications",
    "resume",
    "finish",
];

/// The footer: every key the view knows.
const KEYS: &str = "q quit   sort: m memory  l queue length  a activity  p pid   r reverse";

/// What the process list is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    Memory,
    Queue,
    Activity,
    Pid,
}

impl Sort {
    fn word(self) -> &'static str {
        match self {
            Sort::Memory => "memory",
            Sort::Queue => "queue length",
            Sort::Activity => "activity",
            Sort::Pid => "pid",
        }
    }
}

/// One process, as the view shows it.
#[derive(Debug, Clone)]
struct Proc {
    pid: String,
    /// The pid's numbers, for sorting.
    serial: Vec<u64>,
    name: String,
    code: String,
    queue: u64,
    memory: u64,
    received: u64,
    /// Messages taken per second since the previous snapshot (none on the first).
    rate: Option<f64>,
}

/// Everything the view draws.
#[derive(Debug)]
struct View {
    sort: Sort,
    /// Reverse the sort's natural order (largest first for the counters, smallest pid
    /// first for pids).
    reverse: bool,
    snap: Value,
    procs: Vec<Proc>,
    /// Each pid's messages taken at the previous snapshot, and when that was taken.
    prev: (HashMap<String, u64>, Option<Instant>),
    /// The last refresh failed: why (the view keeps the last good snapshot).
    error: Option<String>,
    interval: Duration,
}

impl View {
    fn new(interval: Duration) -> View {
        View {
            sort: Sort::Memory,
            reverse: false,
            snap: Value::Null,
            procs: Vec::new(),
            prev: (HashMap::new(), None),
            error: None,
            interval,
        }
    }

    /// Take a new snapshot, taken at `at`.
    fn update(&mut self, snap: Value, at: Instant) {
        let secs = self.prev.1.map(|t| at.duration_since(t).as_secs_f64());
        let mut seen = HashMap::new();
        self.procs = snap["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let pid = text(&p["pid"]);
                let received = p["messages_received"].as_u64().unwrap_or(0);
                let rate = match (secs, self.prev.0.get(&pid)) {
                    (Some(s), Some(&before)) if s > 0.0 => {
                        Some(received.saturating_sub(before) as f64 / s)
                    }
                    _ => None,
                };
                seen.insert(pid.clone(), received);
                let code = match (p["module"].as_str(), p["version"].as_str()) {
                    (Some(m), Some(v)) => format!("{m} v{v}"),
                    (Some(m), None) => m.to_string(),
                    _ => "-".into(),
                };
                Proc {
                    serial: pid_serial(&pid),
                    pid,
                    name: p["name"].as_str().unwrap_or("").to_string(),
                    code,
                    queue: p["message_queue_len"].as_u64().unwrap_or(0),
                    memory: p["memory"].as_u64().unwrap_or(0),
                    received,
                    rate,
                }
            })
            .collect();
        self.prev = (seen, Some(at));
        self.snap = snap;
        self.error = None;
        self.sort_procs();
    }

    fn sort_procs(&mut self) {
        use std::cmp::Reverse;
        // Pid order first, so that equal keys keep it (the sorts below are stable).
        self.procs.sort_by(|a, b| a.serial.cmp(&b.serial));
        match self.sort {
            Sort::Memory => self.procs.sort_by_key(|p| Reverse(p.memory)),
            Sort::Queue => self.procs.sort_by_key(|p| Reverse(p.queue)),
            Sort::Activity => self.procs.sort_by(|a, b| {
                let (ra, rb) = (a.rate.unwrap_or(0.0), b.rate.unwrap_or(0.0));
                rb.total_cmp(&ra).then(b.received.cmp(&a.received))
            }),
            Sort::Pid => {}
        }
        if self.reverse {
            self.procs.reverse();
        }
    }

    /// Handle a key; whether to quit.
    fn key(&mut self, code: KeyCode, mods: KeyModifiers) -> bool {
        let sort = match code {
            KeyCode::Char('q') | KeyCode::Esc => return true,
            KeyCode::Char('c') if mods.contains(KeyModifiers::CONTROL) => return true,
            KeyCode::Char('m') => Sort::Memory,
            KeyCode::Char('l') => Sort::Queue,
            KeyCode::Char('a') => Sort::Activity,
            KeyCode::Char('p') => Sort::Pid,
            KeyCode::Char('r') => {
                self.reverse = !self.reverse;
                self.sort_procs();
                return false;
            }
            _ => return false,
        };
        if sort != self.sort {
            self.sort = sort;
            self.reverse = false;
        }
        self.sort_procs();
        false
    }
}

/// `<0.12.0>` -> `[0, 12, 0]`, which sorts pids by creation (unreadable ones last).
fn pid_serial(pid: &str) -> Vec<u64> {
    let parts: Option<Vec<u64>> = pid
        .trim_matches(|c| c == '<' || c == '>')
        .split('.')
        .map(|n| n.parse().ok())
        .collect();
    parts.unwrap_or_else(|| vec![u64::MAX])
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn bytes(b: u64) -> String {
    if b >= 10 << 20 {
        format!("{} MiB", b >> 20)
    } else if b >= 10 << 10 {
        format!("{} KiB", b >> 10)
    } else {
        format!("{b} B")
    }
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{}.{}s", s, (ms % 1000) / 100),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Run `hotswap top`; the process exit code.
pub fn run(opts: Options) -> ExitCode {
    let interactive = std::io::stdout().is_terminal();
    if opts.target.json && !opts.once {
        eprintln!("error: --json prints one snapshot: give it with --once");
        return ExitCode::from(2);
    }
    if !opts.once && !interactive {
        eprintln!(
            "error: hotswap top draws on a terminal, and stdout is not one; run it in a terminal, or pass --once to print one frame as plain text (--once --json: the node's snapshot as JSON)"
        );
        return ExitCode::from(2);
    }
    // The first snapshot before anything is drawn: a node that cannot be asked is said
    // on a normal screen, with the exit status of every control command.
    let first = match fetch(&opts.target) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if opts.once {
        if opts.target.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&first).unwrap_or_default()
            );
            return ExitCode::SUCCESS;
        }
        let mut view = View::new(opts.interval);
        view.update(first, Instant::now());
        let width = opts
            .width
            .or_else(|| {
                interactive
                    .then(|| ratatui::crossterm::terminal::size().ok().map(|(w, _)| w))
                    .flatten()
            })
            .unwrap_or(100)
            .clamp(40, 500);
        print!("{}", frame_text(&view, width));
        return ExitCode::SUCCESS;
    }
    let mut view = View::new(opts.interval);
    view.update(first, Instant::now());
    match live(view, &opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: the terminal failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One snapshot, or the exit code of a failure (said on stderr).
fn fetch(t: &Target) -> Result<Value, ExitCode> {
    client::request(t, "top", Value::Null).map_err(|f| {
        if t.json {
            // As every control command answers with --json: the error as JSON too.
            let error = match &f {
                Failure::Refused(e) => serde_json::json!(e),
                Failure::Unreachable(m) => {
                    serde_json::json!({ "kind": "unreachable", "message": m })
                }
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "ok": false, "error": error }))
                    .unwrap_or_default()
            );
        }
        fail(f)
    })
}

/// Say why the node could not answer; the exit code.
fn fail(f: Failure) -> ExitCode {
    match f {
        Failure::Refused(e) => {
            eprintln!("error: {}", e.message);
            if e.kind == "bad_request" && e.message.contains("unknown command") {
                eprintln!("  this node is older than `hotswap top`: restart it with this hotswap");
            } else if let Some(h) = &e.hint {
                eprintln!("  {h}");
            }
            ExitCode::from(EXIT_REFUSED)
        }
        Failure::Unreachable(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

/// The live view, until a quit key. The terminal is restored however it ends.
fn live(mut view: View, opts: &Options) -> std::io::Result<()> {
    // Snapshots come from a thread of their own, so keys are answered while the node is
    // slow to answer.
    let (tx, rx) = mpsc::channel::<(Result<Value, String>, Instant)>();
    let (target, interval) = (opts.target.clone(), opts.interval);
    std::thread::spawn(move || loop {
        std::thread::sleep(interval);
        let r = client::request(&target, "top", Value::Null).map_err(|f| match f {
            Failure::Refused(e) => e.message,
            Failure::Unreachable(m) => m,
        });
        if tx.send((r, Instant::now())).is_err() {
            return;
        }
    });
    let stop = quit_on_signals();
    let mut terminal = ratatui::try_init()?;
    let r = (|| -> std::io::Result<()> {
        let mut dirty = true;
        loop {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(());
            }
            if dirty {
                terminal.draw(|f| draw(f, &view))?;
                dirty = false;
            }
            if event::poll(Duration::from_millis(100))? {
                match event::read()? {
                    Event::Key(k) if k.kind != KeyEventKind::Release => {
                        if view.key(k.code, k.modifiers) {
                            return Ok(());
                        }
                        dirty = true;
                    }
                    Event::Resize(..) => dirty = true,
                    _ => {}
                }
            }
            while let Ok((r, at)) = rx.try_recv() {
                match r {
                    Ok(v) => view.update(v, at),
                    Err(e) => view.error = Some(e),
                }
                dirty = true;
            }
        }
    })();
    let _ = terminal.show_cursor();
    drop(terminal);
    let restored = ratatui::try_restore();
    r.and(restored)
}

/// Set on SIGTERM, SIGHUP or SIGINT, so that the view ends as if `q` were typed and the
/// terminal is restored (a signal's default action would leave it in raw mode on the
/// alternate screen).
static SIGNALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Async-signal-safe: one atomic store.
    SIGNALLED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Catch SIGTERM, SIGHUP and SIGINT in [`SIGNALLED`]; the flag.
fn quit_on_signals() -> &'static std::sync::atomic::AtomicBool {
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the
        // sigaction struct is fully initialised (zeroed, then the handler set) and lives
        // across the call.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    &SIGNALLED
}

/// One frame as plain text, `width` columns wide and as tall as it needs to show every
/// row.
fn frame_text(view: &View, width: u16) -> String {
    let rows = |k: &str| view.snap[k].as_array().map_or(0, Vec::len) as u16;
    let height =
        1 + 4 + (view.procs.len() as u16 + 3) + (rows("modules") + 3) + (rows("ports") + 3) + 1;
    let mut term = match Terminal::new(TestBackend::new(width, height)) {
        Ok(t) => t,
        Err(never) => match never {},
    };
    if let Err(never) = term.draw(|f| draw_sized(f, view, true)) {
        match never {}
    }
    let buf = term.backend().buffer();
    let mut out = String::new();
    for y in 0..height {
        let mut line = String::new();
        for x in 0..width {
            if let Some(c) = buf.cell((x, y)) {
                line.push_str(c.symbol());
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn draw(f: &mut Frame, view: &View) {
    draw_sized(f, view, false)
}

/// Draw the view; `full`: every row fits (the `--once` frame is made tall enough).
fn draw_sized(f: &mut Frame, view: &View, full: bool) {
    let area = f.area();
    let rows = |k: &str| view.snap[k].as_array().map_or(0, Vec::len) as u16;
    // Modules and ports get the rows they need, up to a quarter of the screen each; the
    // processes the rest.
    let (mut mods, mut ports) = (rows("modules") + 3, rows("ports") + 3);
    if !full {
        let cap = (area.height / 4).max(4);
        (mods, ports) = (mods.min(cap), ports.min(cap));
    }
    let [head, upgrade, procs, mods, ports, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(4),
        Constraint::Min(4),
        Constraint::Length(mods),
        Constraint::Length(ports),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(header(view)), head);
    draw_upgrade(f, view, upgrade);
    draw_processes(f, view, procs);
    draw_modules(f, view, mods);
    draw_ports(f, view, ports);
    f.render_widget(
        Paragraph::new(Line::from(KEYS)).style(Style::new().add_modifier(Modifier::DIM)),
        foot,
    );
}

fn header(view: &View) -> Line<'static> {
    let s = &view.snap;
    let release = match (
        s["release"]["name"].as_str(),
        s["release"]["version"].as_str(),
    ) {
        (Some(n), Some(v)) => format!("release {n} {v}"),
        _ => "no release".into(),
    };
    let mut spans = vec![
        Span::styled("hotswap top", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "  {release} · node pid {} · up {} · {} processes · rss {} · every {}",
            text(&s["node_pid"]),
            duration(s["uptime_ms"].as_u64().unwrap_or(0)),
            view.procs.len(),
            s["rss_bytes"].as_u64().map_or("-".into(), bytes),
            duration(view.interval.as_millis() as u64),
        )),
    ];
    if let Some(e) = &view.error {
        spans.push(Span::styled(
            format!("  ! {e}"),
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ));
    }
    Line::from(spans)
}

fn draw_upgrade(f: &mut Frame, view: &View, area: Rect) {
    let block = Block::bordered().title(" Upgrade ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [phases, bar] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(inner);
    let u = &view.snap["upgrade"];
    let Some(phase) = u["phase"].as_str() else {
        f.render_widget(Paragraph::new("no upgrade in progress"), phases);
        return;
    };
    let (done, total) = (
        u["done"].as_u64().unwrap_or(0),
        u["total"].as_u64().unwrap_or(0),
    );
    let mut spans = vec![Span::raw(format!("to release {}: ", text(&u["to"])))];
    let shown: Vec<&str> = if phase == "rollback" {
        vec!["rollback"]
    } else {
        PHASES.to_vec()
    };
    for (i, p) in shown.iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw(" > "));
        }
        if *p == phase {
            spans.push(Span::styled(
                format!("[{p}]"),
                Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
            ));
        } else {
            spans.push(Span::raw(p.to_string()));
        }
    }
    let line = Line::from(spans);
    let line = if line.width() <= phases.width as usize {
        line
    } else {
        // Too narrow for every phase: the current one and where it is among them.
        let at = PHASES
            .iter()
            .position(|p| *p == phase)
            .map_or(String::new(), |i| {
                format!(" (phase {} of {})", i + 1, PHASES.len())
            });
        Line::from(vec![
            Span::raw(format!("to {}: ", text(&u["to"]))),
            Span::styled(
                format!("[{phase}]"),
                Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
            ),
            Span::raw(at),
        ])
    };
    f.render_widget(Paragraph::new(line), phases);
    // The bar: the processes done in this phase of the upgrade.
    let frac = if total > 0 {
        done as f64 / total as f64
    } else if phase == "done" {
        1.0
    } else {
        0.0
    };
    let label = if total > 0 {
        format!(
            "{phase} {done}/{total} · {}",
            duration(u["elapsed_ms"].as_u64().unwrap_or(0))
        )
    } else {
        format!(
            "{phase} · {}",
            duration(u["elapsed_ms"].as_u64().unwrap_or(0))
        )
    };
    f.render_widget(
        Gauge::default()
            .ratio(frac.clamp(0.0, 1.0))
            .label(label)
            .use_unicode(true),
        bar,
    );
}

fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

fn draw_processes(f: &mut Frame, view: &View, area: Rect) {
    let arrow = if view.reverse { "▲" } else { "▼" };
    let mark = |s: Sort, h: &'static str| {
        if view.sort == s {
            format!("{h}{arrow}")
        } else {
            h.to_string()
        }
    };
    let head = Row::new(vec![
        Cell::from(mark(Sort::Pid, "PID")),
        Cell::from("NAME"),
        Cell::from("CODE"),
        Cell::from(mark(Sort::Queue, "QUEUE")),
        Cell::from(mark(Sort::Memory, "MEMORY")),
        Cell::from("MSGS"),
        Cell::from(mark(Sort::Activity, "MSGS/S")),
    ])
    .style(bold());
    let rows = view.procs.iter().map(|p| {
        Row::new(vec![
            p.pid.clone(),
            p.name.clone(),
            p.code.clone(),
            p.queue.to_string(),
            bytes(p.memory),
            p.received.to_string(),
            p.rate.map_or("-".into(), |r| format!("{r:.1}")),
        ])
    });
    let widths = [
        Constraint::Length(10),
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(8),
    ];
    let title = format!(
        " Processes ({}, sorted by {}{}) ",
        view.procs.len(),
        view.sort.word(),
        if view.reverse { ", reversed" } else { "" }
    );
    f.render_widget(
        Table::new(rows, widths)
            .header(head)
            .block(Block::bordered().title(title)),
        area,
    );
}

fn draw_modules(f: &mut Frame, view: &View, area: Rect) {
    let head = Row::new(vec!["MODULE", "CURRENT", "PROCS", "OLD", "PROCS"]).style(bold());
    let version = |v: &Value| match v["version"].as_str() {
        Some(s) => (format!("v{s}"), text(&v["processes"])),
        None => ("-".into(), "-".into()),
    };
    let list = view.snap["modules"].as_array().cloned().unwrap_or_default();
    let rows = list.iter().map(|m| {
        let (cur, cur_n) = version(&m["current"]);
        let (old, old_n) = version(&m["old"]);
        Row::new(vec![text(&m["name"]), cur, cur_n, old, old_n])
    });
    let widths = [
        Constraint::Length(24),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(7),
    ];
    f.render_widget(
        Table::new(rows, widths)
            .header(head)
            .block(Block::bordered().title(format!(" Modules ({}) ", list.len()))),
        area,
    );
}

fn draw_ports(f: &mut Frame, view: &View, area: Rect) {
    let head = Row::new(vec!["PORT", "TYPE", "OWNER", "LOCAL", "PEER", "IN", "OUT"]).style(bold());
    let list = view.snap["ports"].as_array().cloned().unwrap_or_default();
    let rows = list.iter().map(|p| {
        let peer = match (&p["peer"], &p["connections"]) {
            (Value::Null, Value::Null) => "-".to_string(),
            (Value::Null, n) => format!("{} conns", text(n)),
            (peer, _) => text(peer),
        };
        Row::new(vec![
            text(&p["port"]),
            text(&p["type"]),
            if p["parked"] == true {
                "parked".into()
            } else {
                text(&p["owner"])
            },
            text(&p["local"]),
            peer,
            p["bytes_in"].as_u64().map_or("-".into(), bytes),
            p["bytes_out"].as_u64().map_or("-".into(), bytes),
        ])
    });
    let widths = [
        Constraint::Length(11),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Length(8),
        Constraint::Length(8),
    ];
    f.render_widget(
        Table::new(rows, widths)
            .header(head)
            .block(Block::bordered().title(format!(" Ports ({}) ", list.len()))),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Value {
        serde_json::json!({
            "release": { "name": "t", "version": "1.0.0" },
            "node_pid": 42, "uptime_ms": 61_000, "rss_bytes": 20 << 20,
            "processes": [
                { "pid": "<0.2>", "name": "a", "module": "m", "version": "1", "message_queue_len": 5, "memory": 100, "messages_received": 10 },
                { "pid": "<0.10>", "name": null, "module": null, "version": null, "message_queue_len": 0, "memory": 900, "messages_received": 3 },
            ],
            "modules": [{ "name": "m", "current": { "version": "2", "instance": 2, "processes": 1 }, "old": { "version": "1", "instance": 1, "processes": 1 } }],
            "ports": [],
            "upgrade": { "to": "2.0.0", "phase": "code_change", "done": 3, "total": 6, "elapsed_ms": 1500 },
        })
    }

    #[test]
    fn keys_change_the_sort_and_q_quits() {
        let mut v = View::new(Duration::from_secs(1));
        let t0 = Instant::now();
        v.update(snap(), t0);
        let pids = |v: &View| v.procs.iter().map(|p| p.pid.clone()).collect::<Vec<_>>();
        assert_eq!(pids(&v), ["<0.10>", "<0.2>"], "memory, largest first");
        assert!(!v.key(KeyCode::Char('l'), KeyModifiers::NONE));
        assert_eq!(pids(&v), ["<0.2>", "<0.10>"], "queue, longest first");
        assert!(!v.key(KeyCode::Char('p'), KeyModifiers::NONE));
        assert_eq!(pids(&v), ["<0.2>", "<0.10>"], "pid order is numeric");
        assert!(pid_serial("<0.9.0>") < pid_serial("<0.10.0>"));
        assert!(!v.key(KeyCode::Char('r'), KeyModifiers::NONE));
        assert_eq!(pids(&v), ["<0.10>", "<0.2>"]);
        // Activity: messages per second since the previous snapshot.
        let mut s = snap();
        s["processes"][1]["messages_received"] = 23.into();
        v.update(s, t0 + Duration::from_secs(2));
        assert!(!v.key(KeyCode::Char('a'), KeyModifiers::NONE));
        assert_eq!(pids(&v), ["<0.10>", "<0.2>"]);
        assert_eq!(v.procs[0].rate, Some(10.0));
        assert!(v.key(KeyCode::Char('q'), KeyModifiers::NONE));
        assert!(v.key(KeyCode::Esc, KeyModifiers::NONE));
        assert!(v.key(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert!(!v.key(KeyCode::Char('c'), KeyModifiers::NONE));
    }

    #[test]
    fn a_frame_shows_every_part() {
        let mut v = View::new(Duration::from_secs(1));
        v.update(snap(), Instant::now());
        let t = frame_text(&v, 100);
        for want in [
            "release t 1.0.0",
            "[code_change]",
            "code_change 3/6",
            "<0.10>",
            "m v1",
            "v2",
            "q quit",
        ] {
            assert!(t.contains(want), "want {want:?} in:\n{t}");
        }
        assert_eq!(t.lines().count(), 1 + 4 + 5 + 4 + 3 + 1, "{t}");
    }
}
