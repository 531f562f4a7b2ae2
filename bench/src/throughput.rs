//! One round of `message_throughput` (`compare`'s line, and `msgrate`, its hotswap side
//! alone): `n` 8-byte messages to a fresh `bench:sink`, from one of three senders.

use std::time::{Duration, Instant};

use hotswap_runtime::Node;

/// Who sends a round's messages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sender {
    /// `bench:source`, a module process (the Erlang workload: process to process).
    Module,
    /// A native process looping over `ctx.send_bytes`.
    Native,
    /// Host code (a tokio task, not a process) looping over `node.send_bytes`.
    Host,
}

/// Send `n` 8-byte messages to one `bench:sink` and wait for its "done". Returns msgs/s.
pub async fn throughput_round(node: &Node, n: u64, sender: Sender) -> f64 {
    let me = node.external();
    let sink = node
        .spawn("bench", "sink", &(me.pid(), n))
        .expect("spawn sink");
    let t = Instant::now();
    match sender {
        Sender::Module => {
            node.spawn("bench", "source", &(sink, n))
                .expect("spawn source");
        }
        Sender::Native => {
            node.spawn_native(move |ctx| async move {
                for i in 0..n {
                    ctx.send_bytes(sink, &i.to_le_bytes());
                }
            })
            .expect("spawn_native");
        }
        Sender::Host => {
            for i in 0..n {
                node.send_bytes(sink, i.to_le_bytes().to_vec());
            }
        }
    }
    let done: Option<String> = me.receive(Duration::from_secs(120)).await;
    let d = t.elapsed();
    assert_eq!(done.as_deref(), Some("done"), "sink did not finish");
    n as f64 / d.as_secs_f64()
}
