//! `hotswap demo-client`: the demo's TCP clients ([`super::load`]) against a node started by
//! hand from the release directory `hotswap demo --release-dir` writes.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use super::load::{Load, LoadConfig, Totals};
use crate::control::client::{request, Failure, Target};

/// Options of `hotswap demo-client`.
#[derive(Debug)]
pub struct Options {
    /// The servers (default: the node's TCP listeners).
    pub addrs: Vec<SocketAddr>,
    /// How long to send.
    pub secs: f64,
    /// Connections per server.
    pub conns: usize,
    /// Frames per second per connection.
    pub rate: f64,
    /// Connections per room.
    pub room_size: usize,
    /// The node (to find its listeners), and `--json`.
    pub target: Target,
}

fn usage(e: &str) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// The node's TCP listeners, in the order they were opened.
fn listeners(t: &Target) -> Result<Vec<SocketAddr>, String> {
    let ports = request(t, "ports", Value::Null).map_err(|f| match f {
        Failure::Unreachable(m) => m,
        Failure::Refused(e) => e.message,
    })?;
    let mut l: Vec<(u64, SocketAddr)> = ports
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["type"] == "tcp_listen")
        .filter_map(|p| Some((p["id"].as_u64()?, p["local"].as_str()?.parse().ok()?)))
        .collect();
    l.sort();
    Ok(l.into_iter().map(|(_, a)| a).collect())
}

/// Run the clients; the process exit code.
pub fn run(opts: Options) -> ExitCode {
    if !(opts.secs.is_finite() && opts.secs > 0.0 && opts.secs <= 86_400.0) {
        return usage(&format!(
            "--secs {}: give a number of seconds between 0 and 86400",
            opts.secs
        ));
    }
    if !(opts.rate.is_finite() && opts.rate > 0.0 && opts.rate <= 10_000.0) {
        return usage(&format!(
            "--rate {}: give frames per second between 0 and 10000",
            opts.rate
        ));
    }
    if opts.conns == 0 || opts.conns > 10_000 {
        return usage(&format!("--conns {}: give 1 to 10000", opts.conns));
    }
    if opts.room_size == 0 {
        return usage("--room-size 0: a room holds at least one connection");
    }
    let servers = if opts.addrs.is_empty() {
        match listeners(&opts.target) {
            Ok(l) if l.is_empty() => {
                return usage(&format!(
                    "the node of {} has no TCP listener: start the demo release there (hotswap demo --release-dir DIR; hotswap start DIR), or pass --addr",
                    opts.target.dir.root().display()
                ))
            }
            Ok(l) => l,
            Err(e) => return usage(&format!("cannot find the chat servers: {e} (or pass --addr)")),
        }
    } else {
        opts.addrs.clone()
    };
    let _ = crate::os::raise_open_files(((servers.len() * opts.conns) * 2 + 64) as libc::rlim_t);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return usage(&format!("cannot start the async runtime: {e}")),
    };
    let cfg = LoadConfig {
        servers: servers.clone(),
        conns_per_server: opts.conns,
        room_size: opts.room_size,
        rate: opts.rate,
    };
    let json = opts.target.json;
    let list: Vec<String> = servers.iter().map(|a| a.to_string()).collect();
    if !json {
        println!(
            "{} connections to {} ({} per server, rooms of {}), {} frames/s each, for {} s",
            cfg.connections(),
            list.join(", "),
            opts.conns,
            opts.room_size,
            opts.rate,
            opts.secs
        );
    }
    let r = rt.block_on(async {
        let mut load = Load::start(&cfg).await?;
        tokio::time::sleep(Duration::from_secs_f64(opts.secs)).await;
        let drained = load.stop(Duration::from_secs(10)).await;
        Ok::<_, String>((drained, load.finish().await))
    });
    let (drained, reports) = match r {
        Ok(x) => x,
        Err(e) => return usage(&e),
    };
    let t = Totals::of(&reports);
    let clean = t.clean() && drained.is_ok();
    if json {
        println!("{}", json!({ "ok": clean, "servers": list, "totals": t }));
    } else {
        println!("{}", t.describe());
        for e in &t.errors {
            println!("  {e}");
        }
        println!(
            "{}",
            if clean {
                "OK: nothing dropped, lost, duplicated or out of order"
            } else {
                "FAILED: see above"
            }
        );
    }
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
