//! `sys` requests to many servers at once: every request is sent first, then the replies
//! are collected as they come, so suspending N servers costs one round trip, not N.
//!
//! The requests come from a host-side process (a pid with a mailbox the handler reads
//! directly), each with its own reply tag, as `gen_server`'s calls do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hotswap::gen_server::wire;
use hotswap::sys::Request;
use hotswap::{codec, ExitReason, Pid};
use hotswap_abi as abi;

use crate::process::NodeInner;
use crate::process::{Payload, Process};

/// What one request gave.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// Done.
    Ok,
    /// The process refused or failed (its words).
    Failed(String),
    /// No such process (it exited before or while the request was sent).
    NoProc,
    /// No answer before its deadline.
    Timeout,
}

/// Requests per sending process: a process's reply tags are a list scanned at each
/// delivery, so each sender keeps few.
const CHUNK: usize = 128;

/// Send `req` to every pid (each with its own time limit) and collect the answers, in the
/// order of `targets`. `answered` counts the answers as they come.
pub(crate) async fn send_all(
    node: &Arc<NodeInner>,
    targets: &[(Pid, Duration)],
    req: &Request,
    answered: &Arc<AtomicUsize>,
) -> Vec<Answer> {
    let payload = Arc::new(codec::encode(req));
    let mut tasks = Vec::new();
    for chunk in targets.chunks(CHUNK) {
        let (node, chunk, payload, answered) = (
            node.clone(),
            chunk.to_vec(),
            payload.clone(),
            answered.clone(),
        );
        tasks.push(tokio::spawn(async move {
            send_chunk(&node, &chunk, &payload, || {
                answered.fetch_add(1, Ordering::Relaxed);
            })
            .await
        }));
    }
    let mut out = Vec::with_capacity(targets.len());
    for (t, chunk) in tasks.into_iter().zip(targets.chunks(CHUNK)) {
        match t.await {
            Ok(a) => out.extend(a),
            Err(e) => out.extend(
                chunk
                    .iter()
                    .map(|_| Answer::Failed(format!("the sending task failed: {e}"))),
            ),
        }
    }
    out
}

async fn send_chunk(
    node: &Arc<NodeInner>,
    targets: &[(Pid, Duration)],
    payload: &[u8],
    mut on_answer: impl FnMut(),
) -> Vec<Answer> {
    let (me, notify) = Process::new_host(node.new_pid(), node.clone());
    node.table.insert(me.clone());
    let start = tokio::time::Instant::now();
    let mut answers = vec![Answer::Timeout; targets.len()];
    let mut pending: HashMap<u64, (usize, tokio::time::Instant)> =
        HashMap::with_capacity(targets.len());
    let tags: Vec<u64> = targets.iter().map(|_| node.new_ref()).collect();
    // Tags are registered before anything is sent, so no reply is dropped.
    me.inner.lock().rel().aliases.extend_from_slice(&tags);
    for (i, ((pid, limit), tag)) in targets.iter().zip(&tags).enumerate() {
        if node.post(
            me.pid.0,
            pid.0,
            abi::MSG_SYSTEM,
            *tag,
            Payload::from_slice(payload),
        ) {
            pending.insert(*tag, (i, start + *limit));
        } else {
            answers[i] = Answer::NoProc;
            on_answer();
        }
    }
    while !pending.is_empty() {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        loop {
            let e = {
                let mut g = me.inner.lock();
                me.take_first(&mut g, |e| e.kind == abi::MSG_REPLY)
            };
            let Some(e) = e else { break };
            let Some((i, _)) = pending.remove(&e.reference) else {
                continue;
            };
            answers[i] = match e.data.split_first() {
                Some((&wire::R_VALUE, _)) => Answer::Ok,
                Some((&wire::R_EXIT, _)) => Answer::NoProc,
                Some((&wire::R_SYS_ERROR, rest)) => Answer::Failed(
                    String::from_utf8_lossy(rest.get(1..).unwrap_or(&[])).into_owned(),
                ),
                _ => Answer::Failed("malformed reply to a system request".into()),
            };
            on_answer();
        }
        if pending.is_empty() {
            break;
        }
        let next = pending.values().map(|(_, d)| *d).min().expect("not empty");
        if tokio::time::timeout_at(next, notified).await.is_err() {
            let now = tokio::time::Instant::now();
            let late: Vec<u64> = pending
                .iter()
                .filter(|(_, (_, d))| *d <= now)
                .map(|(t, _)| *t)
                .collect();
            for t in late {
                let (i, _) = pending.remove(&t).expect("listed");
                let alive = node
                    .table
                    .get(targets[i].0 .0)
                    .is_some_and(|p| !p.inner.lock().exited);
                answers[i] = if alive {
                    Answer::Timeout
                } else {
                    Answer::NoProc
                };
                on_answer();
            }
        }
    }
    me.finish(ExitReason::Normal);
    answers
}

/// Send `req` to every pid without waiting for answers (a resume: the process obeys it
/// before any other message, whenever it gets to its mailbox). How many were delivered.
pub(crate) fn post_all(node: &NodeInner, pids: &[Pid], req: &Request) -> usize {
    let payload = codec::encode(req);
    pids.iter()
        .filter(|p| node.post(0, p.0, abi::MSG_SYSTEM, 0, Payload::from_slice(&payload)))
        .count()
}
