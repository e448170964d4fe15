//! Socket set-up shared by the session: options on control connections and
//! outgoing data connections from a chosen local address.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpSocket, TcpStream};

/// TCP_NODELAY (replies are small and latency matters; ftp-proxy's 44 ms
/// Nagle stall is the cautionary tale) and keepalive, so a control
/// connection that is quiet during a long transfer survives cloud balancers.
pub fn tune_control(s: &TcpStream, keepalive: Duration, oob_inline: bool) {
    if let Err(e) = tune(SockRef::from(s), keepalive, oob_inline) {
        tracing::debug!(error = %e, "cannot tune a control connection");
    }
}

/// The options of [`tune_control`] on a control listener: Linux gives every
/// connection it accepts the listener's (TCP_NODELAY, SO_KEEPALIVE and its
/// timers, SO_OOBINLINE), which saves five system calls per session. False
/// when one could not be set (each session then sets them itself). A
/// connection takes them when its handshake completes, so a listener gets
/// them before it listens (`server::listeners`).
pub fn tune_listener(l: &impl AsFd, keepalive: Duration, oob_inline: bool) -> bool {
    tune(SockRef::from(l), keepalive, oob_inline).is_ok()
}

/// Sets every option even when one fails; the first error is returned.
fn tune(sock: SockRef<'_>, keepalive: Duration, oob_inline: bool) -> io::Result<()> {
    let nodelay = sock.set_nodelay(true);
    let ka = TcpKeepalive::new()
        .with_time(keepalive)
        .with_interval((keepalive / 4).max(Duration::from_secs(1)));
    let keepalive = sock.set_tcp_keepalive(&ka);
    // The ABOR synch arrives as urgent data; keep it in the stream so no byte
    // of the command line is pulled out of band (RFC 959 4.1.3).
    let oob = if oob_inline {
        sock.set_out_of_band_inline(true)
    } else {
        Ok(())
    };
    nodelay.and(keepalive).and(oob)
}

/// Connects to `to` from `from_ip` (port `from_port`, 0 for any), within `timeout`.
pub async fn connect_from(
    from: SocketAddr,
    to: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let sock = if to.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if from.port() != 0 {
        // A fixed source port (20) is shared by every active-mode transfer;
        // connections that just closed leave it in TIME-WAIT, which
        // SO_REUSEADDR alone does not get past on Linux.
        sock.set_reuseaddr(true)?;
        sock.set_reuseport(true)?;
    } else {
        // Only the address is fixed: the port is picked at connect time
        // (any port not in use with this peer), not by bind, whose search
        // for a port unused by every socket on the host was about a tenth
        // of ftpgate's CPU under a few thousand sessions a second (perf:
        // inet_csk_get_port). Best effort: without it bind picks the port.
        let _ = nix::sys::socket::setsockopt(
            &sock,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        );
    }
    sock.bind(from)?;
    match tokio::time::timeout(timeout, sock.connect(to)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// One non-blocking read straight from the socket, bypassing tokio's cached
/// readiness (see `Session::drain_client_socket`). `WouldBlock` when empty.
pub fn read_nonblocking(s: &TcpStream, buf: &mut bytes::BytesMut) -> io::Result<usize> {
    use std::io::Read;
    let mut tmp = [0u8; 2048];
    let sock = SockRef::from(s);
    let n = (&*sock).read(&mut tmp)?;
    buf.extend_from_slice(&tmp[..n]);
    Ok(n)
}

/// The destination a client connected to before iptables/nftables
/// redirected it here: SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST
/// (IPv6) from conntrack for REDIRECT/DNAT, or the local address itself for
/// TPROXY (the socket is bound to the original destination). `None` when
/// nothing redirected the connection (it was made to ftpgate itself).
pub fn original_destination(s: &TcpStream, listener: SocketAddr) -> Option<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    let local = crate::net::canonical(s.local_addr().ok()?);
    // TPROXY: accepted on the listener, but bound to the original address.
    let listener_ip = crate::net::canonical_ip(listener.ip());
    if local.port() != listener.port()
        || (!listener_ip.is_unspecified() && local.ip() != listener_ip)
    {
        return Some(local);
    }
    let original = if local.is_ipv4() {
        getsockopt(s, sockopt::OriginalDst).ok().map(|a| {
            SocketAddr::from((
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        })
    } else {
        getsockopt(s, sockopt::Ip6tOriginalDst).ok().map(|a| {
            SocketAddr::from((
                std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
            ))
        })
    }
    .map(crate::net::canonical)?;
    // Without NAT conntrack reports the connection's own destination.
    (original != local).then_some(original)
}

/// Lets an IPv4 gateway listener accept TPROXY-diverted connections
/// (IP_TRANSPARENT; needs CAP_NET_ADMIN; without it REDIRECT still works).
pub fn allow_tproxy(s: &socket2::Socket) -> io::Result<()> {
    s.set_ip_transparent(true)
}
