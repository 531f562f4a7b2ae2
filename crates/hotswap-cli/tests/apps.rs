//! Applications as supervision trees in a real node (`hotswap start` as a child process),
//! stopped by real signals: the order in which a node stop takes applications down through
//! their trees (seed 003), what an application's termination does to the node (spec §5.2),
//! the stop's time limit, and manifests with bad trees.
//!
//! The workers are the `app_worker` fixture: each appends `init <id>` and
//! `terminate <id> <reason>` to a log file, which the tests read once the node is gone.

use std::path::PathBuf;

use serde_json::Value;

mod support;
use support::*;

const HEAD: &str = r#"
[release]
name = "apps"
version = "1.0.0"

[node]
stop_timeout_ms = 10000

[[module]]
name = "app_worker"
version = "1"
file = "lib/libapp_worker.so"
"#;

/// A release of `app_worker` applications (`apps`: the `[[application]]` tables, where
/// `@LOG@` stands for the workers' log file) and that log file's path.
fn release(tag: &str, apps: &str) -> (Rel, PathBuf) {
    let rel = Rel::with_manifest(tag, HEAD);
    let log = rel.root.join("workers.log");
    let manifest = format!("{HEAD}\n{}", apps.replace("@LOG@", log.to_str().unwrap()));
    std::fs::write(rel.root.join("releases/1.0.0/release.toml"), manifest).unwrap();
    (rel, log)
}

/// The workers' log lines that start with `what ` (`init`, `terminate`), without it.
fn lines(log: &PathBuf, what: &str) -> Vec<String> {
    let prefix = format!("{what} ");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

/// Start a node that may terminate by itself: its exit code and stderr once it is gone
/// (whether or not it got as far as its ready line).
fn run_to_exit(rel: &Rel) -> (Option<i32>, String) {
    match NodeProc::try_start(rel) {
        Ok(mut node) => {
            let code = node.wait_exit(WAIT);
            (code, node.stderr())
        }
        Err(r) => (r.code, r.stderr),
    }
}

/// The index of the first line of `text` that contains `what`.
fn line_of(text: &str, what: &str) -> usize {
    text.lines()
        .position(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no line with {what:?} in:\n{text}"))
}

/// Three applications (listed out of order: the manifest sorts them by dependency), each a
/// different kind of tree: `start` entries with the shutdown rules of seed 003, and a tree
/// from the module's own Supervisor callback.
const THREE_APPS: &str = r#"
[[application]]
name = "web"
version = "3.0.0"
depends = ["cache"]
start = [
  { server = "app_worker", id = "web1", arg = { id = "web/1", trap_exit = true, log = "@LOG@" } },
  { server = "app_worker", id = "web2", arg = { id = "web/2", trap_exit = true, log = "@LOG@" } },
  # does not trap exits: the shutdown signal kills it at once, terminate never runs
  { server = "app_worker", id = "web3", arg = { id = "web/3", log = "@LOG@" } },
  { server = "app_worker", id = "web4", arg = { id = "web/4", trap_exit = true, log = "@LOG@" }, name = "web4" },
]

[[application]]
name = "db"
version = "1.0.0"
type = "permanent"
strategy = "one_for_all"
start = [
  { server = "app_worker", id = "db1", arg = { id = "db/1", trap_exit = true, log = "@LOG@" } },
  # brutal_kill: killed, terminate never runs, although it traps exits
  { server = "app_worker", id = "db2", arg = { id = "db/2", trap_exit = true, log = "@LOG@" }, shutdown = "brutal_kill" },
  { server = "app_worker", id = "db3", arg = { id = "db/3", trap_exit = true, log = "@LOG@" }, shutdown = 2000 },
]

[[application]]
name = "cache"
version = "2.0.0"
depends = ["db"]
supervisor = "app_worker"
arg = { children = 3, worker = { id = "cache/", trap_exit = true, log = "@LOG@" } }
"#;

#[test]
fn seed003_node_stop_stops_applications_in_reverse_order() {
    let (rel, log) = release("seed003", THREE_APPS);
    let mut node = NodeProc::start(&rel);
    assert_eq!(
        lines(&log, "init"),
        [
            "db/1", "db/2", "db/3", "cache/1", "cache/2", "cache/3", "web/1", "web/2", "web/3",
            "web/4"
        ],
        "dependencies first, children in order"
    );

    // What the node says about its applications before the stop.
    let (code, st) = rel.json(&["status"]);
    assert_eq!(code, Some(0), "{st}");
    let apps = st["applications"].as_array().expect("applications");
    let names: Vec<&str> = apps.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["db", "cache", "web"], "{st}");
    assert!(apps.iter().all(|a| a["type"] == "permanent"), "{st}");
    let ids: Vec<&str> = apps[2]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["web1", "web2", "web3", "web4"], "{st}");
    assert_eq!(apps[2]["processes"][3]["name"], "web4", "{st}");
    assert_eq!(apps[1]["processes"].as_array().unwrap().len(), 3, "{st}");
    // 10 workers, 3 top supervisors, 3 masters.
    assert_eq!(st["processes"], 16, "{st}");
    let (_, ps) = rel.json(&["processes"]);
    let of = |app: &str, role: &str| {
        ps.as_array()
            .unwrap()
            .iter()
            .filter(|p| p["application"] == app && p["role"] == role)
            .count()
    };
    assert_eq!(
        (
            of("cache", "application_master"),
            of("cache", "supervisor"),
            of("cache", "worker")
        ),
        (1, 1, 3),
        "{ps}"
    );
    assert_eq!(of("web", "worker"), 4, "{ps}");

    signal(node.pid, libc::SIGTERM);
    assert_eq!(node.wait_exit(WAIT), Some(0), "{}", node.stderr());
    assert_eq!(
        lines(&log, "terminate"),
        [
            // web: reverse child order; web/3 did not trap exits
            "web/4 shutdown",
            "web/2 shutdown",
            "web/1 shutdown",
            // cache: the module's tree, reverse order
            "cache/3 shutdown",
            "cache/2 shutdown",
            "cache/1 shutdown",
            // db: db/2 was brutally killed
            "db/3 shutdown",
            "db/1 shutdown",
        ],
        "applications in reverse start order, children in reverse order; stderr:\n{}",
        node.stderr()
    );
    let err = node.stderr();
    let (w, c, d) = (
        line_of(&err, "application web exited: stopped"),
        line_of(&err, "application cache exited: stopped"),
        line_of(&err, "application db exited: stopped"),
    );
    assert!(w < c && c < d, "{err}");
    assert!(line_of(&err, "SIGTERM received") < w, "{err}");
    assert!(err.contains("clean=true"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!rel.socket().exists() && !rel.run().join("node.pid").exists());
}

/// `keeper`, then `doomed` (of type `type`), whose only worker crashes right after every
/// `init`: with intensity 1, its top supervisor gives up at the second crash.
fn doomed(tag: &str, start_type: &str) -> (Rel, PathBuf) {
    release(
        tag,
        &format!(
            r#"
[[application]]
name = "keeper"
version = "1.0.0"
start = [
  {{ server = "app_worker", id = "k1", arg = {{ id = "keeper/1", trap_exit = true, log = "@LOG@" }} }},
  {{ server = "app_worker", id = "k2", arg = {{ id = "keeper/2", trap_exit = true, log = "@LOG@" }} }},
]

[[application]]
name = "doomed"
version = "1.0.0"
type = "{start_type}"
depends = ["keeper"]
start = [
  {{ server = "app_worker", id = "crasher", arg = {{ id = "doomed/crasher", crash = "boom", log = "@LOG@" }} }},
]
"#
        ),
    )
}

/// A permanent or transient application whose tree gives up: the node says so, stops the
/// other applications (their terminate runs), and exits 1.
fn check_node_terminates(start_type: &str) {
    let (rel, log) = doomed(&format!("doomed-{start_type}"), start_type);
    let (code, err) = run_to_exit(&rel);
    assert_eq!(code, Some(1), "{err}");
    let said = line_of(
        &err,
        &format!("application doomed exited: shutdown, type: {start_type}: the node terminates: {{application_terminated, doomed, shutdown}}"),
    );
    assert!(err.lines().nth(said).unwrap().contains("ERROR"), "{err}");
    let stopped = line_of(&err, "application keeper exited: stopped");
    assert!(said < stopped, "{err}");
    assert_eq!(
        lines(&log, "init")
            .iter()
            .filter(|l| *l == "doomed/crasher")
            .count(),
        2,
        "started, restarted once, then the supervisor gave up"
    );
    assert_eq!(
        lines(&log, "terminate")
            .into_iter()
            .filter(|l| l.starts_with("keeper/"))
            .collect::<Vec<_>>(),
        ["keeper/2 shutdown", "keeper/1 shutdown"],
        "the other application was stopped through its tree"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!rel.socket().exists() && !rel.run().join("node.pid").exists());
}

#[test]
fn application_permanent_failure_stops_node() {
    check_node_terminates("permanent");
}

#[test]
fn application_transient_failure_stops_node() {
    check_node_terminates("transient");
}

#[test]
fn application_temporary_failure_keeps_node_running() {
    let (rel, log) = doomed("doomed-temporary", "temporary");
    let mut node = NodeProc::start(&rel);
    assert!(
        node.wait_stderr("application doomed exited: shutdown, type: temporary", WAIT),
        "{}",
        node.stderr()
    );
    let (code, st) = rel.json(&["status"]);
    assert_eq!(code, Some(0), "{st}");
    let names: Vec<&str> = st["applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["keeper"], "{st}");
    assert_eq!(st["halt_reason"], Value::Null, "{st}");
    // keeper's two workers, its supervisor and its master.
    assert_eq!(st["processes"], 4, "{st}");

    signal(node.pid, libc::SIGTERM);
    assert_eq!(node.wait_exit(WAIT), Some(0), "{}", node.stderr());
    assert_eq!(
        lines(&log, "terminate")
            .into_iter()
            .filter(|l| l.starts_with("keeper/"))
            .collect::<Vec<_>>(),
        ["keeper/2 shutdown", "keeper/1 shutdown"]
    );
    assert!(
        !node.stderr().contains("the node terminates"),
        "{}",
        node.stderr()
    );
}

#[test]
fn node_stop_time_limit_names_what_it_waits_for() {
    let (rel, log) = release(
        "stop-limit",
        r#"
[[application]]
name = "quick"
version = "1.0.0"
start = [
  { server = "app_worker", id = "q1", arg = { id = "quick/1", trap_exit = true, log = "@LOG@" } },
]

[[application]]
name = "slow"
version = "1.0.0"
depends = ["quick"]
start = [
  { server = "app_worker", id = "s1", arg = { id = "slow/1", trap_exit = true, log = "@LOG@" } },
  # its terminate never returns, and its supervisor waits as long as it takes
  { server = "app_worker", id = "hang", name = "hanger", shutdown = "infinity", arg = { id = "slow/hang", trap_exit = true, terminate_hang = true, log = "@LOG@" } },
]
"#,
    );
    let manifest = rel.root.join("releases/1.0.0/release.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("stop_timeout_ms = 10000", "stop_timeout_ms = 300");
    std::fs::write(&manifest, text).unwrap();
    let mut node = NodeProc::start(&rel);
    let (_, ps) = rel.json(&["processes"]);
    let hanger = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hanger")
        .expect("the hanging worker")["pid"]
        .as_str()
        .unwrap()
        .to_string();

    let r = rel.ctl(&["stop"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(node.wait_exit(WAIT), Some(0), "{}", node.stderr());
    let err = node.stderr();
    let line = err
        .lines()
        .nth(line_of(&err, "graceful shutdown abandoned"))
        .unwrap();
    for want in [
        "time limit of 300 ms",
        "waiting for application \"slow\"",
        &format!("is waiting for {hanger} \"hanger\" (gen_server app_worker 1) to exit"),
        "applications not stopped: quick, slow",
    ] {
        assert!(line.contains(want), "want {want:?} in {line}");
    }
    assert!(err.contains("clean=false"), "{err}");
    // slow/hang's terminate began; nothing ran terminate after the time limit.
    assert_eq!(lines(&log, "terminate"), ["slow/hang shutdown"]);
}

#[test]
fn bad_trees_are_refused_at_start() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"start = [{ server = "app_worker", shutdown = "later" }]"#,
            &[
                "start entry #1: shutdown = \"later\" is not a shutdown rule",
                "\"brutal_kill\"",
            ],
        ),
        (
            r#"strategy = "one_for_some""#,
            &["unknown variant `one_for_some`", "rest_for_one"],
        ),
        (
            r#"start = [{ server = "app_worker", restart = "always" }]"#,
            &["unknown variant `always`", "permanent"],
        ),
        (
            r#"supervisor = "app_worker"
start = [{ server = "app_worker" }]"#,
            &[
                "supervisor = \"app_worker\" takes the whole tree",
                "remove it, or remove supervisor",
            ],
        ),
        (
            r#"start = [{ server = "app_worker", id = "a" }, { server = "app_worker", id = "a" }]"#,
            &["duplicate_child_name"],
        ),
        (
            r#"start = [{ server = "app_worker", after = 3 }]"#,
            &["unknown field `after`"],
        ),
        // Checked when the tree starts: the module's callback refuses nothing here, but
        // a spawn of a function the module does not export fails its child's start.
        (
            r#"start = [{ spawn = "app_worker:nosuch" }]"#,
            &["application \"bad\" did not start", "nosuch"],
        ),
    ];
    for (tree, want) in cases {
        let (rel, _) = release(
            "bad-tree",
            &format!("[[application]]\nname = \"bad\"\nversion = \"1\"\n{tree}\n"),
        );
        let r = NodeProc::try_start(&rel)
            .err()
            .unwrap_or_else(|| panic!("{tree}: a bad tree must not start"));
        assert_eq!(r.code, Some(1), "{tree}: {r}");
        assert!(
            r.stderr.contains("release.toml") || r.stderr.contains("did not start"),
            "{tree}: names the file: {r}"
        );
        for w in *want {
            assert!(r.stderr.contains(w), "{tree}: want {w:?}\n{r}");
        }
        assert!(!r.stderr.contains("panicked"), "{tree}: {r}");
        assert!(!rel.socket().exists(), "{tree}: no socket left behind");
    }
}

/// `children`, `terminate-child`, `restart-child` and `delete-child` on a live node: the
/// tree of an application's top supervisor, named by `--app` or by its pid.
#[test]
fn cli_children_and_child_commands() {
    let (rel, log) = release(
        "children",
        r#"
[[application]]
name = "shop"
version = "1.0.0"
start = [
  { server = "app_worker", id = "cart", name = "cart", arg = { id = "shop/cart", trap_exit = true, log = "@LOG@" } },
  { server = "app_worker", id = "audit", arg = { id = "shop/audit", trap_exit = true, log = "@LOG@" } },
]
"#,
    );
    let node = NodeProc::start(&rel);
    let (_, st) = rel.json(&["status"]);
    let sup = st["applications"][0]["supervisor"]
        .as_str()
        .expect("the top supervisor")
        .to_string();

    // The children, latest started first, with the counts.
    let (code, v) = rel.json(&["children", "--app", "shop"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["supervisor"]["pid"], sup.as_str(), "{v}");
    assert_eq!(v["supervisor"]["application"], "shop", "{v}");
    let kids = v["children"].as_array().expect("children");
    let ids: Vec<&str> = kids.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["audit", "cart"], "{v}");
    for k in kids {
        assert!(k["pid"].as_str().unwrap().starts_with("<0."), "{v}");
        assert_eq!(k["type"], "worker", "{v}");
        assert_eq!(k["modules"], serde_json::json!(["app_worker"]), "{v}");
    }
    assert_eq!(kids[1]["name"], "cart", "{v}");
    assert_eq!(
        v["counts"],
        serde_json::json!({ "specs": 2, "active": 2, "supervisors": 0, "workers": 2 }),
        "{v}"
    );
    let cart = kids[1]["pid"].as_str().unwrap().to_string();
    let audit = kids[0]["pid"].as_str().unwrap().to_string();
    // The same supervisor by its pid in every form, for people.
    let n = sup
        .trim_start_matches("<0.")
        .trim_end_matches(".0>")
        .to_string();
    for form in [sup.clone(), format!("0.{n}"), n.clone()] {
        let r = rel.ctl(&["children", &form]);
        assert_eq!(r.code, Some(0), "{form}: {r}");
        assert!(
            r.stdout.starts_with(&format!(
                "supervisor {sup} (application shop): 2 specs, 2 active (0 supervisors, 2 workers)\n"
            )),
            "{form}: {r}"
        );
        let row = |id: &str| {
            r.stdout
                .lines()
                .find(|l| l.starts_with(id))
                .unwrap_or_else(|| panic!("no row {id}: {r}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert!(r.stdout.contains("ID "), "{r}");
        assert_eq!(
            row("cart"),
            ["cart", &cart, "(cart)", "worker", "app_worker"]
        );
        assert_eq!(row("audit"), ["audit", &audit, "worker", "app_worker"]);
    }

    // terminate-child: the child runs terminate, its spec stays, its pid is undefined.
    let r = rel.ctl(&["terminate-child", &sup, "cart"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout
            .contains(&format!("terminated cart ({cart}) of supervisor {sup}"))
            && r.stdout
                .contains(&format!("hotswap restart-child {sup} cart")),
        "{r}"
    );
    let (_, v) = rel.json(&["children", "--app", "shop"]);
    assert_eq!(v["children"][1]["id"], "cart", "{v}");
    assert_eq!(v["children"][1]["pid"], "undefined", "{v}");
    assert_eq!(v["counts"]["specs"], 2, "{v}");
    assert_eq!(v["counts"]["active"], 1, "{v}");
    let r = rel.ctl(&["children", &sup]);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("cart") && l.contains("undefined")),
        "{r}"
    );

    // restart-child: a new process.
    let (code, v) = rel.json(&["restart-child", &sup, "cart"]);
    assert_eq!(code, Some(0), "{v}");
    let cart2 = v["pid"].as_str().expect("the new pid").to_string();
    assert_ne!(cart2, cart, "{v}");
    let (_, v) = rel.json(&["children", &sup]);
    assert_eq!(v["children"][1]["pid"], cart2.as_str(), "{v}");
    assert_eq!(v["children"][1]["name"], "cart", "registered again: {v}");
    let r = rel.ctl(&["restart-child", &sup, "cart"]);
    assert_eq!(r.code, Some(1), "running: {r}");

    // delete-child of a running child is refused, with what to do.
    let r = rel.ctl(&["delete-child", &sup, "cart"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("child \"cart\" is running")
            && r.stderr.contains(&format!(
                "terminate-child it first: `hotswap terminate-child {sup} cart`"
            )),
        "{r}"
    );
    let (code, e) = rel.json(&["delete-child", "--app", "shop", "cart"]);
    assert_eq!(code, Some(1), "{e}");
    assert_eq!(e["error"]["kind"], "running", "{e}");
    assert!(
        e["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("hotswap terminate-child --app shop cart"),
        "{e}"
    );
    // Unknown ids are named, with where to look.
    let (code, e) = rel.json(&["restart-child", &sup, "nosuch"]);
    assert_eq!(code, Some(1), "{e}");
    assert_eq!(e["error"]["kind"], "not_found", "{e}");
    assert!(
        e["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("hotswap children"),
        "{e}"
    );

    // After terminate-child, delete-child works and the spec is gone.
    let r = rel.ctl(&["terminate-child", "--app", "shop", "cart"]);
    assert_eq!(r.code, Some(0), "{r}");
    let (code, v) = rel.json(&["delete-child", "--app", "shop", "cart"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["deleted"], true, "{v}");
    let (_, v) = rel.json(&["children", "--app", "shop"]);
    assert_eq!(v["children"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["children"][0]["id"], "audit", "{v}");
    assert_eq!(v["counts"]["specs"], 1, "{v}");

    // A child named by its pid.
    let (code, v) = rel.json(&["terminate-child", &sup, &audit]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["id"], "audit", "{v}");
    assert_eq!(v["pid"], audit.as_str(), "{v}");
    assert_eq!(v["spec_kept"], true, "{v}");
    let (_, v) = rel.json(&["children", "--app", "shop"]);
    assert_eq!(v["children"][0]["pid"], "undefined", "{v}");
    assert_eq!(v["counts"]["active"], 0, "{v}");

    // Usage errors are 2.
    let r = rel.ctl(&["terminate-child", &sup]);
    assert_eq!(r.code, Some(2), "{r}");
    let r = rel.ctl(&["delete-child", "--app", "shop", &sup, "cart"]);
    assert_eq!(r.code, Some(2), "{r}");

    let r = rel.ctl(&["stop"]);
    assert_eq!(r.code, Some(0), "{r}");
    let mut node = node;
    assert_eq!(node.wait_exit(WAIT), Some(0), "{}", node.stderr());
    assert_eq!(
        lines(&log, "init"),
        ["shop/cart", "shop/audit", "shop/cart"],
        "restart-child ran init again"
    );
    assert_eq!(
        lines(&log, "terminate"),
        [
            "shop/cart shutdown",
            "shop/cart shutdown",
            "shop/audit shutdown"
        ],
        "each terminate-child ran terminate; the stop had nothing left to stop"
    );
}

/// Supervisor commands aimed at what is not a supervisor are refused at once, and a
/// supervisor that does not answer is waited for only as long as the client waits.
#[test]
fn cli_children_bad_targets() {
    let (rel, _) = release(
        "children-bad",
        r#"
[[module]]
name = "demo"
version = "1"
file = "lib/libdemo_v1.so"

[[application]]
name = "busy"
version = "1.0.0"
start = [
  { server = "app_worker", id = "srv", name = "srv", arg = { id = "busy/srv" } },
  { spawn = "demo:start", arg = "plain", name = "plain" },
  # its terminate never returns, and its supervisor waits as long as it takes
  { server = "app_worker", id = "hang", name = "hanger", shutdown = "infinity", arg = { id = "busy/hang", trap_exit = true, terminate_hang = true } },
]
"#,
    );
    let _node = NodeProc::start(&rel);
    let (_, st) = rel.json(&["status"]);
    let master = st["applications"][0]["master"]
        .as_str()
        .unwrap()
        .to_string();
    let sup = st["applications"][0]["supervisor"]
        .as_str()
        .unwrap()
        .to_string();

    for (args, kind, says) in [
        (
            vec!["children", "nosuch"],
            "noproc",
            "no process is registered as \"nosuch\"".to_string(),
        ),
        (
            vec!["children", "999"],
            "noproc",
            "no process <0.999.0>".into(),
        ),
        (
            vec!["children", "--app", "nosuch"],
            "noproc",
            "no application \"nosuch\" is running".into(),
        ),
        (
            vec!["restart-child", "nosuch", "srv"],
            "noproc",
            "no process is registered as \"nosuch\"".into(),
        ),
        (
            vec!["children", "srv"],
            "not_a_supervisor",
            "(srv) is a gen_server of module app_worker 1, not a supervisor".into(),
        ),
        (
            vec!["terminate-child", "srv", "x"],
            "not_a_supervisor",
            "is a gen_server".into(),
        ),
        (
            vec!["children", "plain"],
            "not_a_supervisor",
            "(plain) is a process running module demo 1, not a supervisor".into(),
        ),
        (
            vec!["delete-child", "plain", "x"],
            "not_a_supervisor",
            "running module demo".into(),
        ),
        (
            vec!["children", master.as_str()],
            "not_a_supervisor",
            format!("{master} is the application master of busy, not a supervisor"),
        ),
    ] {
        let (code, e) = rel.json(&args);
        assert_eq!(code, Some(1), "{args:?}: {e}");
        assert_eq!(e["error"]["kind"], kind, "{args:?}: {e}");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&says), "{args:?}: want {says:?} in {e}");
        assert!(e["error"]["hint"].is_string(), "{args:?}: {e}");
    }
    let (_, e) = rel.json(&["children", &master]);
    assert!(
        e["error"]["hint"].as_str().unwrap().contains(&format!(
            "its top supervisor is {sup}: `hotswap children --app busy`"
        )),
        "{e}"
    );
    let r = rel.ctl(&["children", "srv"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.starts_with("error: ") && r.stderr.contains("not a supervisor"),
        "{r}"
    );
    // The gen_server was not sent anything it could take for one of its own calls.
    let (code, v) = rel.json(&["get-state", "srv"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["state"]["id"], "busy/srv", "{v}");

    // A supervisor busy with a shutdown that never ends: the node answers when the
    // client's time is nearly up (exit 1, its own error), not the client's timeout (3).
    let (code, e) = rel.json(&[
        "terminate-child",
        "--app",
        "busy",
        "hang",
        "--timeout",
        "1.5",
    ]);
    assert_eq!(code, Some(1), "{e}");
    assert_eq!(e["error"]["kind"], "timeout", "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "supervisor {sup} (application busy) did not answer within"
        )) && msg.contains("may still be carried out"),
        "{e}"
    );
    let (code, e) = rel.json(&["children", &sup, "--timeout", "1"]);
    assert_eq!(code, Some(1), "{e}");
    assert_eq!(e["error"]["kind"], "timeout", "{e}");
    assert!(
        !e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may still be carried out"),
        "children changes nothing: {e}"
    );
}
