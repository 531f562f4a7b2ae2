//! Release upgrades through the `hotswap` binary, with real nodes: `releases`, `unpack`,
//! `upgrade` (plan, upgrade, failure rolled back, downgrade, `--permanent`),
//! `upgrade-status`, `make-permanent`, `remove-release`, each with `--json`, and what a
//! node killed after an upgrade boots.

mod support;

use serde_json::Value;
use support::{lib_name, NodeProc, Rel, WAIT};

const V1: &str = r#"
[release]
name = "rel"
version = "1.0.0"

[[module]]
name = "rel_srv"
version = "1"
file = "lib/librel_srv_v1.so"

[[application]]
name = "pool"
version = "1"
start = [{ server = "rel_srv", name = "s", arg = 7 }]
"#;

/// Release `vsn` of `rel` with module rel_srv at `file` (relative) and `extra` appended.
fn manifest(vsn: &str, module_vsn: &str, file: &str, extra: &str) -> String {
    V1.replace("version = \"1.0.0\"", &format!("version = \"{vsn}\""))
        .replace(
            "version = \"1\"\nfile = \"lib/librel_srv_v1.so\"",
            &format!("version = \"{module_vsn}\"\nfile = \"{file}\""),
        )
        + extra
}

/// Release 2.0.0: rel_srv version 2, with `extra` appended.
fn v2<'a>(vsn: &'a str, extra: &str) -> (&'a str, String) {
    (
        vsn,
        manifest(vsn, "2", &format!("lib/{}", lib_name("rel_srv_v2")), extra),
    )
}

fn statuses(rel: &Rel) -> (String, Vec<(String, String)>) {
    let (code, v) = rel.json(&["releases"]);
    assert_eq!(code, Some(0), "{v}");
    let list = v["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["version"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (v["running"].as_str().unwrap_or("").to_string(), list)
}

fn state(rel: &Rel) -> Value {
    let (code, v) = rel.json(&["get-state", "s"]);
    assert_eq!(code, Some(0), "{v}");
    v["state"].clone()
}

fn kill(node: &mut NodeProc) {
    support::signal(node.pid, libc::SIGKILL);
    node.wait_exit(WAIT);
}

#[test]
fn release_not_permanent_boots_previous_after_kill() {
    let (rel, mut node) = support::release_node("rel-kill", V1, &[v2("2.0.0", "")]);
    let (code, v) = rel.json(&["upgrade", "2.0.0"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["report"]["servers_migrated"], 1, "{v}");
    assert!(
        state(&rel)["total"].is_u64(),
        "the new shape: {}",
        state(&rel)
    );
    let (_, st) = rel.json(&["status"]);
    assert_eq!(
        st["release"]["version"], "2.0.0",
        "status names the running release: {st}"
    );
    assert_eq!(
        statuses(&rel),
        (
            "2.0.0".into(),
            vec![
                ("1.0.0".into(), "permanent".into()),
                ("2.0.0".into(), "current".into())
            ]
        )
    );
    // Killed after an upgrade that was not made permanent: the permanent release boots.
    kill(&mut node);
    let mut node = NodeProc::start(&rel);
    let (running, list) = statuses(&rel);
    assert_eq!(running, "1.0.0");
    assert_eq!(
        list,
        vec![
            ("1.0.0".into(), "permanent".into()),
            ("2.0.0".into(), "unpacked".into())
        ]
    );
    assert!(state(&rel)["count"].is_u64(), "{}", state(&rel));
    // With --permanent, a kill boots the new release.
    let (code, v) = rel.json(&["upgrade", "2.0.0", "--permanent"]);
    assert_eq!(code, Some(0), "{v}");
    kill(&mut node);
    let _node = NodeProc::start(&rel);
    let (running, list) = statuses(&rel);
    assert_eq!(running, "2.0.0");
    assert_eq!(
        list,
        vec![
            ("1.0.0".into(), "old".into()),
            ("2.0.0".into(), "permanent".into())
        ]
    );
    assert!(state(&rel)["total"].is_u64(), "{}", state(&rel));
}

#[test]
fn cli_release_commands_with_and_without_json() {
    // 3.0.0 injects a code_change failure (the check's copy passes, the switch fails).
    let (rel, _node) = support::release_node(
        "rel-cli",
        V1,
        &[
            v2("2.0.0", ""),
            v2(
                "3.0.0",
                "[upgrade.rel_srv]\nextra = { fail_id = 7, fail_on = 2 }\n",
            ),
        ],
    );

    // unpack: a package directory with its own library path.
    let pkg = rel.root.join("pkg");
    support::write_manifest(
        &pkg,
        "4.0.0",
        &manifest("4.0.0", "2", "lib/r4/librel_srv_v2.so", ""),
    );
    std::fs::create_dir_all(pkg.join("lib/r4")).unwrap();
    std::fs::copy(rel.lib("rel_srv_v2"), pkg.join("lib/r4/librel_srv_v2.so")).unwrap();
    let (code, v) = rel.json(&["unpack", pkg.to_str().unwrap()]);
    assert_eq!(
        (code, &v["version"]),
        (Some(0), &Value::from("4.0.0")),
        "{v}"
    );
    assert!(rel.root.join("lib/r4/librel_srv_v2.so").is_file());
    let (code, v) = rel.json(&["unpack", pkg.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "bad_package", "{v}");
    let r = rel.ctl(&["releases"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout.contains("4.0.0") && r.stdout.contains("unpacked"),
        "{r}"
    );
    assert!(r.stdout.contains("running"), "{r}");

    // The plan, as text and JSON.
    let r = rel.ctl(&["upgrade", "2.0.0", "--plan"]);
    assert_eq!(r.code, Some(0), "{r}");
    for w in [
        "upgrade from release 1.0.0 to 2.0.0",
        "rel_srv",
        "changed",
        "suspend rel_srv: 1 process(es)",
        "commit: make current rel_srv",
    ] {
        assert!(r.stdout.contains(w), "want {w:?}:\n{r}");
    }
    let (code, v) = rel.json(&["upgrade", "2.0.0", "--plan"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["plan"]["modules"][0]["change"], "changed", "{v}");
    assert_eq!(
        v["plan"]["modules"][0]["servers"].as_array().unwrap().len(),
        1
    );
    assert_eq!(statuses(&rel).0, "1.0.0", "--plan changes nothing");

    // A failed upgrade rolls back, and says so.
    let r = rel.ctl(&["upgrade", "3.0.0"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("rolled back") && r.stderr.contains("injected failure"),
        "{r}"
    );
    let (code, v) = rel.json(&["upgrade", "3.0.0"]);
    assert_eq!(code, Some(1), "{v}");
    // Each attempt loads the library afresh (its own statics): the same failure again.
    assert_eq!(v["error"]["kind"], "rolled_back", "{v}");
    assert_eq!(v["error"]["details"]["phase"], "code_change", "{v}");
    assert!(state(&rel)["count"].is_u64());

    // The upgrade, in words: progress and a summary.
    let r = rel.ctl(&["upgrade", "2.0.0"]);
    assert_eq!(r.code, Some(0), "{r}");
    for w in [
        "upgrade from release 1.0.0 to 2.0.0: done in",
        "1 server(s) migrated",
        "pause:",
        "not permanent",
    ] {
        assert!(r.stdout.contains(w), "want {w:?}:\n{r}");
    }
    let (code, v) = rel.json(&["upgrade-status"]);
    assert_eq!((code, v), (Some(0), Value::Null));
    assert!(rel
        .ctl(&["upgrade-status"])
        .stdout
        .contains("no upgrade in progress"));

    // make-permanent, then the downgrade back to 1.0.0.
    let (code, v) = rel.json(&["make-permanent"]);
    assert_eq!(
        (code, &v["version"]),
        (Some(0), &Value::from("2.0.0")),
        "{v}"
    );
    let (code, v) = rel.json(&["make-permanent", "4.0.0"]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "bad_status", "{v}");
    let r = rel.ctl(&["upgrade", "1.0.0"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout.contains("downgrade from release 2.0.0 to 1.0.0"),
        "{r}"
    );
    assert!(
        state(&rel)["count"].is_u64(),
        "the old shape is back: {}",
        state(&rel)
    );
    let r = rel.ctl(&["make-permanent"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("release 1.0.0 is permanent"), "{r}");

    // remove-release: refused for the running one; 4.0.0's own library goes with it.
    let (code, v) = rel.json(&["remove-release", "1.0.0"]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "bad_status", "{v}");
    let (code, v) = rel.json(&["remove-release", "4.0.0"]);
    assert_eq!(code, Some(0), "{v}");
    assert!(!rel.root.join("lib/r4/librel_srv_v2.so").exists());
    assert!(rel.lib("rel_srv_v2").exists(), "a file 2.0.0 uses stays");
    let r = rel.ctl(&["remove-release", "2.0.0"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("release 2.0.0 removed"), "{r}");
    let (_, list) = statuses(&rel);
    assert_eq!(
        list,
        vec![
            ("1.0.0".into(), "permanent".into()),
            ("3.0.0".into(), "unpacked".into())
        ]
    );
    let (code, v) = rel.json(&["upgrade", "9.9.9"]);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "no_such_release", "{v}");
}

/// `hotswap upgrade` runs the types check on every changed module: count_server 4 cannot
/// read version 1's ticks, so the upgrade is refused (kind `incompatible`, the report in
/// the details, exit 1, nothing touched); `--force` upgrades anyway and says so.
#[test]
fn cli_upgrade_refused_by_types_check_unless_forced() {
    let count = |vsn: &str, krate: &str| {
        format!(
            "\n[[module]]\nname = \"count_server\"\nversion = \"{vsn}\"\nfile = \"lib/{}\"\n",
            lib_name(krate)
        )
    };
    let (rel, _node) = support::release_node(
        "rel-types",
        &format!("{V1}{}", count("1", "count_server_v1")),
        &[v2("2.0.0", &count("4", "count_server_v4"))],
    );
    let r = rel.ctl(&["upgrade", "2.0.0"]);
    assert_eq!(r.code, Some(1), "{r}");
    for w in ["types check", "count_server", "handle_info", "--force"] {
        assert!(r.stderr.contains(w), "missing {w:?} in {r}");
    }
    let (code, v) = rel.json(&["upgrade", "2.0.0"]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "incompatible", "{v}");
    assert_eq!(
        v["error"]["details"]["reports"][0]["module"], "count_server",
        "{v}"
    );
    assert_eq!(statuses(&rel).0, "1.0.0", "nothing was touched");
    assert!(state(&rel)["count"].is_u64());
    let (code, v) = rel.json(&["upgrade", "2.0.0", "--force"]);
    assert_eq!(code, Some(0), "{v}");
    let warned = v["report"]["warnings"].as_array().unwrap().iter().any(|w| {
        w.as_str()
            .unwrap_or("")
            .contains("forced past the types check")
    });
    assert!(warned, "{v}");
    assert_eq!(statuses(&rel).0, "2.0.0");
}
