//! `hotswap check`: the compatibility check without a node (for CI) and against a running
//! node (`--node`, with the dry run on live states), and `hotswap load --force`.

mod support;

use serde_json::Value;
use support::{hotswap, NodeProc, Rel};

/// `hotswap <cmd> <args>`, without a node.
fn run(cmd: &str, args: &[&str]) -> support::Run {
    let a: Vec<String> = std::iter::once(cmd)
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    hotswap(&a, &[])
}

#[test]
fn compat_check_cli_exit_codes() {
    let rel = Rel::new("check");
    let lib = |k: &str| rel.lib(k).to_str().unwrap().to_string();
    let (v1, v4, v5) = (
        lib("count_server_v1"),
        lib("count_server_v4"),
        lib("count_server_v5"),
    );

    // 1: incompatible, naming the callback, the old form, the new type and the fix.
    let r = run("check", &[&v1, &v4]);
    assert_eq!(r.code, Some(1), "{r}");
    for want in [
        "INCOMPATIBLE",
        "handle_info",
        "enum OldTick { Increment }",
        "NewTick",
        "Fix:",
    ] {
        assert!(r.stdout.contains(want), "missing {want:?}: {r}");
    }
    // 0: the backward-compatible clause, declared.
    let r = run("check", &[&v1, &v5]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("count_server 1 -> 5: compatible"), "{r}");
    // --downgrade also counts what v1 could not read of v5's: then 1.
    let r = run("check", &["--downgrade", &v1, &v5]);
    assert_eq!(r.code, Some(1), "{r}");

    // --json: one object, the verdict and the report.
    let r = run("check", &["--json", &v1, &v4]);
    assert_eq!(r.code, Some(1), "{r}");
    let v: Value = serde_json::from_str(&r.stdout).expect("JSON on stdout");
    assert_eq!(v["verdict"], "incompatible", "{v}");
    let f = &v["report"]["incompatible"][0];
    assert_eq!(
        (&f["callback"], &f["level"]),
        (&"handle_info".into(), &"upgrade".into()),
        "{v}"
    );
    let r = run("check", &["--json", &v1, &v5]);
    let v: Value = serde_json::from_str(&r.stdout).expect("JSON on stdout");
    assert_eq!(
        (r.code, &v["verdict"]),
        (Some(0), &"compatible".into()),
        "{v}"
    );

    // 5: a type the tracer does not cover is "not checked", never "compatible".
    let u = lib("uncovered_state");
    let r = run("check", &[&u, &u]);
    assert_eq!(r.code, Some(5), "{r}");
    assert!(
        r.stdout.contains("not checked (upgrade): code_change"),
        "{r}"
    );
    assert!(r.stdout.contains("deserialize_any"), "{r}");

    // 4: files that are not modules, or two different modules; the error says which file.
    let text = rel.root.join("not-a-module.so");
    std::fs::write(&text, "hello").unwrap();
    let r = run("check", &[&v1, text.to_str().unwrap()]);
    assert_eq!(r.code, Some(4), "{r}");
    assert!(
        r.stderr.contains("not-a-module.so") && r.stderr.contains("not a shared library"),
        "{r}"
    );
    let r = run("check", &["/nonexistent/libx.so", &v1]);
    assert_eq!(r.code, Some(4), "{r}");
    assert!(
        r.stderr
            .contains("no such module file: /nonexistent/libx.so"),
        "{r}"
    );
    let r = run("check", &["--json", &v1, &u]);
    assert_eq!(r.code, Some(4), "{r}");
    assert!(r.stderr.contains("holds module `count_server`"), "{r}");

    // 2: usage.
    assert_eq!(run("check", &[&v1]).code, Some(2));
    assert_eq!(run("check", &[]).code, Some(2));
}

const COUNT_RELEASE: &str = r#"
[release]
name = "test"
version = "1.0.0"

[node]
log_level = "info"

[[module]]
name = "count_server"
version = "1"
file = "lib/libcount_server_v1.so"

[[application]]
name = "count"
version = "1.0.0"
start = [
  { server = "count_server", id = "c1", arg = { listener = 1, interval_ms = 0 }, name = "counter" },
]
"#;

#[test]
fn check_node_dry_run_and_forced_load() {
    let rel = Rel::with_manifest("checknode", COUNT_RELEASE);
    let _node = NodeProc::start(&rel);
    let v4 = rel.lib("count_server_v4");
    let v5 = rel.lib("count_server_v5");

    // v5 passes, with the dry run on the live server's state.
    let r = rel.ctl(&["check", "--node", v5.to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout.contains("compatible") && r.stdout.contains("dry run"),
        "{r}"
    );
    assert!(r.stdout.contains("(state of 1): ok"), "{r}");

    // v4 is refused by the check and by a plain load; the node stays on v1.
    let r = rel.ctl(&["check", "--node", v4.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{r}");
    let (code, e) = rel.json(&["load", v4.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{e}");
    assert_eq!(e["error"]["kind"], "incompatible", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("handle_info"),
        "{e}"
    );
    assert_eq!(
        e["error"]["details"]["incompatible"][0]["callback"],
        "handle_info"
    );
    let (_, m) = rel.json(&["modules"]);
    let m = m.to_string();
    assert!(
        m.contains("\"version\":\"1\"") && !m.contains("\"version\":\"4\""),
        "still v1: {m}"
    );

    // --force loads it anyway.
    let (code, v) = rel.json(&["load", "--force", v4.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["current"]["version"], "4");
}

/// `hotswap check OLD NEW` takes each description from the library's record when one was
/// made for its exact bytes (what a node loading it would compare), says so, and falls
/// back to the module's `describe`, with the reason, when the record is of another build.
#[test]
fn check_cli_compares_description_records() {
    let rel = Rel::new("check-records");
    let (v1, v4, v5) = (
        rel.lib("count_server_v1"),
        rel.lib("count_server_v4"),
        rel.lib("count_server_v5"),
    );
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let sources = |v: &Value| {
        let d = &v["descriptions"];
        (
            d["old"]["source"].as_str().unwrap_or_default().to_string(),
            d["new"]["source"].as_str().unwrap_or_default().to_string(),
        )
    };
    let json = |args: &[&str]| {
        let r = run("check", args);
        let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r}"));
        (r, v)
    };

    // No records: both described by their modules.
    let (r, v) = json(&["--json", &s(&v1), &s(&v5)]);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(sources(&v), ("describe".into(), "describe".into()), "{v}");
    assert_eq!(
        v["descriptions"]["new"]["record_ignored"],
        Value::Null,
        "{v}"
    );
    let r = run("check", &[&s(&v1), &s(&v5)]);
    assert!(r.stdout.contains("no description record"), "{r}");

    // Records for all three: the same verdicts, from the records.
    for l in [&v1, &v4, &v5] {
        let r = run("describe", &["--write", &s(l)]);
        assert_eq!(r.code, Some(0), "{r}");
    }
    let (r, v) = json(&["--json", &s(&v1), &s(&v5)]);
    assert_eq!(
        (r.code, &v["verdict"]),
        (Some(0), &"compatible".into()),
        "{v}"
    );
    assert_eq!(sources(&v), ("record".into(), "record".into()), "{v}");
    let r = run("check", &[&s(&v1), &s(&v4)]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stdout.contains("NewTick"), "{r}");
    assert!(r.stdout.contains("its description record"), "{r}");

    // The record is what is compared: v5's record rewritten to hold v4's description for
    // v5's bytes (the library hash is bytes 8..16) makes v1 -> v5 report v4's finding.
    let rec = |l: &std::path::Path| {
        rel.root.join(format!(
            "lib/{}.schema",
            l.file_name().unwrap().to_str().unwrap()
        ))
    };
    let v5_record = std::fs::read(rec(&v5)).unwrap();
    let mut forged = std::fs::read(rec(&v4)).unwrap();
    forged[8..16].copy_from_slice(&v5_record[8..16]);
    std::fs::write(rec(&v5), &forged).unwrap();
    let (r, v) = json(&["--json", &s(&v1), &s(&v5)]);
    assert_eq!(
        (r.code, &v["verdict"]),
        (Some(1), &"incompatible".into()),
        "{v}"
    );
    assert_eq!(sources(&v).1, "record", "{v}");

    // A record of another build (v4's, as it was) is ignored with the reason, and v5's own
    // describe decides again.
    std::fs::copy(rec(&v4), rec(&v5)).unwrap();
    let (r, v) = json(&["--json", &s(&v1), &s(&v5)]);
    assert_eq!(
        (r.code, &v["verdict"]),
        (Some(0), &"compatible".into()),
        "{v}"
    );
    assert_eq!(sources(&v), ("record".into(), "describe".into()), "{v}");
    assert!(
        v["descriptions"]["new"]["record_ignored"]
            .as_str()
            .is_some_and(|w| w.contains("another build")),
        "{v}"
    );
    let r = run("check", &[&s(&v1), &s(&v5)]);
    assert!(r.stdout.contains("description record ignored"), "{r}");
}

/// `hotswap describe`: the description of a library, its record's status, `--write` to
/// record it beside the library, `--json`; errors name the file.
#[test]
fn describe_cli_writes_the_description_record() {
    let rel = Rel::new("describe");
    let lib = rel.lib("count_server_v4");
    let l = lib.to_str().unwrap();
    let record = rel.root.join("lib/libcount_server_v4.so.schema");

    // Without --write: the description, and no record yet.
    let r = run("describe", &[l]);
    assert_eq!(r.code, Some(0), "{r}");
    for want in [
        "module count_server 4",
        "gen_server:",
        "info: ",
        "NewTick",
        "record: none",
        "--write",
    ] {
        assert!(r.stdout.contains(want), "missing {want:?}: {r}");
    }
    assert!(!record.exists());

    // --write: the record beside the library.
    let r = run("describe", &["--write", l]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("record written:"), "{r}");
    assert!(r.stdout.contains(record.to_str().unwrap()), "{r}");
    let bytes = std::fs::read(&record).expect("the record is written");
    assert_eq!(&bytes[..4], b"HSDR");
    let r = run("describe", &[l]);
    assert!(r.stdout.contains("valid for these bytes"), "{r}");

    // --json: the module, the hash, the record's path and status, the description.
    let r = run("describe", &["--json", l]);
    assert_eq!(r.code, Some(0), "{r}");
    let v: Value = serde_json::from_str(&r.stdout).expect("JSON on stdout");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["module"], "count_server", "{v}");
    assert_eq!(v["version"], "4", "{v}");
    assert_eq!(v["record"]["status"], "valid", "{v}");
    assert_eq!(v["record"]["path"], record.to_str().unwrap(), "{v}");
    assert_eq!(v["library_hash"].as_str().map(str::len), Some(16), "{v}");
    assert!(
        v["description"]["server"]["info"]["rust"]
            .as_str()
            .is_some_and(|t| t.ends_with("NewTick")),
        "{v}"
    );
    // A record of another library is reported as not used, with the reason.
    std::fs::copy(&record, rel.root.join("lib/libcount_server_v5.so.schema")).unwrap();
    let v5 = rel.lib("count_server_v5");
    let r = run("describe", &["--json", v5.to_str().unwrap()]);
    let v: Value = serde_json::from_str(&r.stdout).expect("JSON on stdout");
    assert_eq!(v["record"]["status"], "ignored", "{v}");
    assert!(
        v["record"]["reason"]
            .as_str()
            .is_some_and(|s| s.contains("another build")),
        "{v}"
    );
    let r = run("describe", &["--write", "--json", v5.to_str().unwrap()]);
    let v: Value = serde_json::from_str(&r.stdout).expect("JSON on stdout");
    assert_eq!(v["record"]["status"], "written", "{v}");

    // 4: a missing file, a file that is not a module; nothing written.
    let r = run("describe", &["--write", "/nonexistent/libx.so"]);
    assert_eq!(r.code, Some(4), "{r}");
    assert!(
        r.stderr
            .contains("no such module file: /nonexistent/libx.so"),
        "{r}"
    );
    let text = rel.root.join("not-a-module.so");
    std::fs::write(&text, "hello").unwrap();
    let r = run("describe", &["--write", "--json", text.to_str().unwrap()]);
    assert_eq!(r.code, Some(4), "{r}");
    let v: Value = serde_json::from_str(&r.stdout).expect("JSON on stdout");
    assert_eq!(v["error"]["kind"], "bad_file", "{v}");
    assert!(
        r.stderr.contains("not-a-module.so") && r.stderr.contains("not a shared library"),
        "{r}"
    );
    assert!(!rel.root.join("not-a-module.so.schema").exists());
    // 2: usage.
    assert_eq!(run("describe", &[]).code, Some(2));
}
