//! UDP ports: a reader task that receives only while someone wants datagrams.

use std::sync::Arc;

use hotswap::net::{wire, NetError, UdpOptions};
use tokio::net::UdpSocket;

use super::{deliver, emit, io_error, parse_addr, Kind, Port, State};
use crate::process::NodeInner;

/// Bind a UDP port owned by `owner`; its id.
pub(super) fn open(
    node: &Arc<NodeInner>,
    owner: u64,
    addr: &str,
    opts: UdpOptions,
) -> Result<u64, NetError> {
    let a = parse_addr(addr)?;
    if opts.max_datagram == 0 {
        return Err(NetError::InvalidArgument(
            "max_datagram must be at least 1".into(),
        ));
    }
    let s = std::net::UdpSocket::bind(a).map_err(|e| io_error(&e, addr))?;
    s.set_nonblocking(true).map_err(|e| io_error(&e, addr))?;
    let s = Arc::new(UdpSocket::from_std(s).map_err(|e| io_error(&e, addr))?);
    let mut st = State::new(owner);
    st.local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
    st.active = opts.active;
    st.park = opts.park;
    st.label = opts.label;
    st.max_frame = opts.max_datagram;
    let p = node
        .ports()
        .insert(node, Kind::Udp, st, None, Some(s.clone()), None);
    node.rt
        .spawn(reader(node.clone(), p.clone(), s, opts.max_datagram));
    Ok(p.id)
}

/// Send one datagram (never waits: a full socket buffer is an error to retry).
pub(super) fn send_to(p: &Port, addr: &str, data: &[u8]) -> Result<(), NetError> {
    let a = parse_addr(addr)?;
    let s = p.udp.as_ref().expect("a UDP port has its socket");
    match s.try_send_to(data, a) {
        Ok(n) => {
            let mut st = p.st.lock();
            st.bytes_out += n as u64;
            crate::process::sched::note_io();
            st.msgs_out += 1;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(NetError::Busy(
            "the socket's send buffer is full; retry later".into(),
        )),
        Err(e) => Err(io_error(&e, addr)),
    }
}

async fn reader(node: Arc<NodeInner>, p: Arc<Port>, s: Arc<UdpSocket>, max: usize) {
    let mut buf = vec![0u8; max];
    // A datagram received while the port was wanted, then no longer was.
    let mut held: Option<Vec<u8>> = None;
    loop {
        let n = p.rx.notified();
        tokio::pin!(n);
        n.as_mut().enable();
        let wait = {
            let mut st = p.st.lock();
            if st.closed {
                return;
            }
            if !st.wants() {
                true
            } else if let Some(body) = held.take() {
                deliver(&node, &p, &mut st, &body);
                st.rx_buffered = 0;
                continue;
            } else {
                false
            }
        };
        if wait {
            n.await;
            continue;
        }
        tokio::select! {
            r = s.recv_from(&mut buf) => {
                let mut st = p.st.lock();
                match r {
                    Ok((k, peer)) => {
                        st.bytes_in += k as u64;
                        crate::process::sched::note_io();
                        let mut body = Vec::with_capacity(k + 48);
                        wire::put_addr(&mut body, &peer.to_string());
                        body.extend_from_slice(&buf[..k]);
                        st.rx_buffered = k;
                        held = Some(body);
                    }
                    Err(e) => emit(&node, &st, p.id, wire::UDP_ERROR, format!("receive failed: {e}").as_bytes()),
                }
            },
            _ = &mut n => {}
        }
    }
}
