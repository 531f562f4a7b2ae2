//! `chat_load`: drive a chat server (`modules/chat_v*`) with many connections sending
//! sequence-numbered, checksummed frames at a constant rate, and report resets, gaps,
//! duplicates, lost bytes and latency. Run it against a node while you upgrade the chat
//! application: a correct upgrade shows 0 resets, 0 gaps, 0 duplicates, 0 lost bytes.
//!
//! ```text
//! chat_load ADDR[,ADDR...] [--conns N] [--rate FRAMES_PER_S] [--secs S] [--room-size K] [--padding B]
//! ```
//!
//! Exit status 0 when nothing was lost, 1 otherwise.

use std::time::Duration;

#[path = "netload.rs"]
mod netload;

fn usage() -> ! {
    eprintln!("usage: chat_load ADDR[,ADDR...] [--conns N] [--rate FRAMES_PER_S_PER_CONN] [--secs S] [--room-size K] [--padding BYTES]");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(addrs) = args.first() else { usage() };
    let mut cfg = netload::LoadConfig {
        addrs: addrs.split(',').map(str::to_string).collect(),
        conns: 100,
        rate: 50.0,
        room_size: 1,
        padding: 36,
    };
    let mut secs = 10.0;
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1).unwrap_or_else(|| usage());
        match args[i].as_str() {
            "--conns" => cfg.conns = v.parse().unwrap_or_else(|_| usage()),
            "--rate" => cfg.rate = v.parse().unwrap_or_else(|_| usage()),
            "--secs" => secs = v.parse().unwrap_or_else(|_| usage()),
            "--room-size" => cfg.room_size = v.parse().unwrap_or_else(|_| usage()),
            "--padding" => cfg.padding = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
        i += 2;
    }
    netload::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let report = rt.block_on(async {
        let load = netload::Load::start(&cfg);
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        load.finish().await
    });
    println!("{}", report.describe());
    let clean = report.resets.is_empty()
        && report.gaps == 0
        && report.duplicates == 0
        && report.corrupt == 0
        && report.lost_bytes == 0;
    std::process::exit(if clean { 0 } else { 1 });
}
