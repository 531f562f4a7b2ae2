//! The node's side of the release commands: `releases`, `unpack`, `upgrade` (and its
//! `--plan`), `upgrade_progress`, `make_permanent`, `remove_release`. Each is a call into
//! [`crate::release::Releases`]; this file only turns arguments and answers into
//! JSON.

use std::path::Path;

use crate::release::{ReleaseError, UpgradeOptions};
use crate::Node;
use serde_json::{json, Value};

use super::args::{absolute, bad};
use super::ErrorReply;

/// A release error as a control error reply.
pub fn error(e: ReleaseError) -> ErrorReply {
    let msg = e.to_string();
    let (kind, hint) = match &e {
        ReleaseError::NotBooted => ("not_booted", None),
        ReleaseError::Manifest(_) => ("bad_manifest", None),
        ReleaseError::Store(_) => ("store", None),
        ReleaseError::BadPackage(_) => ("bad_package", None),
        ReleaseError::NoSuchRelease { .. } => (
            "no_such_release",
            Some("add it first: hotswap unpack <dir | release.tar.gz>"),
        ),
        ReleaseError::BadStatus { .. } => ("bad_status", None),
        ReleaseError::AlreadyRunning(_) => ("already_running", None),
        ReleaseError::Busy(_) => ("busy", Some("see its progress with: hotswap upgrade-status")),
        ReleaseError::Refused { .. } => (
            "refused",
            Some("nothing was changed: fix what is named and run the upgrade again"),
        ),
        ReleaseError::Incompatible { .. } => (
            "incompatible",
            Some("nothing was changed: fix the new version (the fix is named), or upgrade with --force"),
        ),
        ReleaseError::RolledBack { .. } => (
            "rolled_back",
            Some("the node runs the previous release as before: fix what is named and run the upgrade again"),
        ),
    };
    let mut r = ErrorReply::new(kind, msg);
    if let Some(h) = hint {
        r = r.hint(h);
    }
    if let ReleaseError::RolledBack { phase, resumed, .. } = &e {
        r = r.details(json!({ "phase": phase, "resumed": resumed }));
    }
    if let ReleaseError::Incompatible { reports, .. } = &e {
        r = r.details(json!({ "reports": reports }));
    }
    r
}

fn version_arg(args: &Value, key: &str) -> Result<Option<String>, ErrorReply> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(bad(format!("argument {key:?} must be a release version"))),
    }
}

/// `releases`.
pub fn releases(node: &Node) -> Result<Value, ErrorReply> {
    let list = node.releases().list().map_err(error)?;
    let running = node
        .releases()
        .running()
        .map(|r| r.manifest.release.version);
    Ok(json!({ "running": running, "releases": list }))
}

/// `unpack`.
pub async fn unpack(node: &Node, args: &Value) -> Result<Value, ErrorReply> {
    let path = version_arg(args, "path")?.ok_or_else(|| bad("missing argument \"path\""))?;
    let path = absolute(Path::new(&path), "package")?;
    let vsn = node.releases().unpack(path).await.map_err(error)?;
    Ok(json!({ "version": vsn, "status": "unpacked" }))
}

/// `upgrade` (with `plan: true`, only the plan).
pub async fn upgrade(node: &Node, args: &Value) -> Result<Value, ErrorReply> {
    let vsn = version_arg(args, "version")?.ok_or_else(|| bad("missing argument \"version\""))?;
    if args.get("plan").and_then(Value::as_bool) == Some(true) {
        let plan = node.releases().plan(&vsn).await.map_err(error)?;
        return Ok(json!({ "plan": plan, "text": plan.to_string() }));
    }
    let opts = UpgradeOptions {
        permanent: args.get("permanent").and_then(Value::as_bool) == Some(true),
        suspend_timeout: args
            .get("suspend_timeout_ms")
            .and_then(Value::as_u64)
            .map(std::time::Duration::from_millis),
        force: args.get("force").and_then(Value::as_bool) == Some(true),
        ..UpgradeOptions::default()
    };
    let report = node
        .releases()
        .upgrade(&vsn, opts.clone())
        .await
        .map_err(error)?;
    let status = node
        .releases()
        .list()
        .ok()
        .and_then(|l| l.into_iter().find(|e| e.version == vsn))
        .map(|e| e.status);
    Ok(json!({ "report": report, "status": status }))
}

/// `upgrade_progress`.
pub fn progress(node: &Node) -> Value {
    json!(node.releases().progress())
}

/// `make_permanent`.
pub async fn make_permanent(node: &Node, args: &Value) -> Result<Value, ErrorReply> {
    let vsn = version_arg(args, "version")?;
    let v = node
        .releases()
        .make_permanent(vsn.as_deref())
        .await
        .map_err(error)?;
    Ok(json!({ "version": v, "status": "permanent" }))
}

/// `remove_release`.
pub async fn remove(node: &Node, args: &Value) -> Result<Value, ErrorReply> {
    let vsn = version_arg(args, "version")?.ok_or_else(|| bad("missing argument \"version\""))?;
    let removed = node.releases().remove(&vsn).await.map_err(error)?;
    Ok(json!({ "version": vsn, "removed": removed }))
}
