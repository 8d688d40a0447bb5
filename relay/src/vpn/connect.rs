//! Proxied TCP connections at the exit (`Open::Connect`, behind the client's SOCKS5 proxy): a
//! Noise `IK` pipe with the client, an encrypted connect request (host names resolve here, at
//! the exit), the exit's address policy, then bytes both ways, metered like tunnel traffic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use top_proto::frame::{FrameCodec, FrameError, Open};
use top_proto::pipe_crypto::{MAX_NOISE_MSG, MAX_PIPE_CHUNK, PipeCipher, respond};
use top_proto::vpn::{ConnectReply, ConnectRequest};

use crate::billing::budget::Budget;
use crate::billing::meter::ClientMeter;
use crate::node::core::Core;
use top_billing::Service;

/// How long resolving and connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn records() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_NOISE_MSG)
        .new_codec()
}

fn bad(_: impl std::fmt::Debug) -> FrameError {
    FrameError::Unexpected("bad proxied-connection record")
}

/// Whether the exit may connect to `ip` for a client: never to a special-purpose range, the
/// tunnel pool or the exit host itself; to private ranges only if the config allows.
pub fn allowed(core: &Core, ip: IpAddr) -> bool {
    let ip = unmapped(ip);
    !refused(ip, &core.config.vpn) && !is_this_host(core, ip)
}

/// An IPv4 address in IPv6 clothes (`::ffff:a.b.c.d`) is the IPv4 address it is.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` lies in a range the config keeps tunnels from.
fn refused(ip: IpAddr, vpn: &crate::node::config::VpnConfig) -> bool {
    match unmapped(ip) {
        IpAddr::V4(v4) => refused_range(v4, vpn.pool, vpn.allow_private),
        IpAddr::V6(v6) => refused_range6(v6, vpn.pool6, vpn.allow_private),
    }
}

/// Whether `ip` lies in an IPv6 range no proxied connection may reach.
fn refused_range6(ip: Ipv6Addr, pool6: ipnet::Ipv6Net, allow_private: bool) -> bool {
    let within = |ranges: Vec<ipnet::Ipv6Net>| ranges.iter().any(|n| n.contains(&ip));
    within(top_netconf::exit6::special_ranges6())
        || pool6.contains(&ip)
        || (!allow_private && within(top_netconf::exit6::private_ranges6()))
}

/// Whether `ip` lies in a range no proxied connection may reach.
fn refused_range(ip: Ipv4Addr, pool: ipnet::Ipv4Net, allow_private: bool) -> bool {
    let within = |ranges: Vec<ipnet::Ipv4Net>| ranges.iter().any(|n| n.contains(&ip));
    within(top_netconf::exit::special_ranges())
        || pool.contains(&ip)
        || (!allow_private && within(top_netconf::exit::private_ranges()))
}

/// Whether `ip` is on one of this host's interfaces (the kernel binds a socket only to those).
fn is_local_address(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Whether `ip` is this host: a local address, or the public address it advertises (behind
/// NAT it is not on an interface, and connecting to it would come back here).
fn is_this_host(core: &Core, ip: IpAddr) -> bool {
    if is_local_address(ip) {
        return true;
    }
    let advertised = core.config.advertised(core.config.listen);
    advertised
        .parse::<SocketAddr>()
        .ok()
        .is_some_and(|public| public.ip() == ip)
}

/// Serves one proxied connection.
pub async fn serve_connect(
    core: Arc<Core>,
    is_exit: bool,
    meter: Option<Arc<ClientMeter>>,
    send: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, FrameCodec<Open>>,
) -> Result<(), FrameError> {
    let mut input = frames.map_decoder(|_| records());
    let mut output = FramedWrite::new(send, records());
    let first = input
        .next()
        .await
        .ok_or(FrameError::Unexpected("no handshake"))?
        .map_err(bad)?;
    let (reply, mut cipher) = respond(&core.identity, &first).map_err(bad)?;
    output.send(Bytes::from(reply)).await.map_err(bad)?;
    let record = input
        .next()
        .await
        .ok_or(FrameError::Unexpected("no request"))?
        .map_err(bad)?;
    let mut plain = vec![0u8; MAX_NOISE_MSG];
    let n = cipher.decrypt(&record, &mut plain).map_err(bad)?;
    let ConnectRequest::Host(host, port) = postcard::from_bytes(&plain[..n]).map_err(bad)?;
    let (answer, tcp) = if !is_exit {
        (ConnectReply::Forbidden, None)
    } else if meter.as_ref().is_some_and(|m| !m.has_channel()) {
        (ConnectReply::PaymentRequired, None)
    } else {
        match tokio::time::timeout(CONNECT_TIMEOUT, connect(&core, &host, port)).await {
            Ok(Ok(tcp)) => (ConnectReply::Connected, Some(tcp)),
            Ok(Err(reply)) => (reply, None),
            Err(_) => (ConnectReply::Unreachable, None),
        }
    };
    send_record(
        &mut output,
        &mut cipher,
        &postcard::to_allocvec(&answer).map_err(bad)?,
    )
    .await?;
    let Some(tcp) = tcp else { return Ok(()) };
    core.metrics.vpn.connects.inc();
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let cipher = Arc::new(std::sync::Mutex::new(cipher));
    let (c_up, c_down) = (cipher.clone(), cipher);
    let (mut up_budget, mut down_budget) = (
        Budget::new(meter.clone(), Service::Vpn),
        Budget::new(meter, Service::Vpn),
    );
    let up = async {
        let mut plain = vec![0u8; MAX_NOISE_MSG];
        while let Some(Ok(record)) = input.next().await {
            if !super::spend(&core, &mut up_budget, record.len() + 4) {
                break;
            }
            let n = match crate::util::lock(&c_up).decrypt(&record, &mut plain) {
                Ok(n) => n,
                Err(_) => break,
            };
            if tcp_write.write_all(&plain[..n]).await.is_err() {
                break;
            }
        }
        tcp_write.shutdown().await.ok();
    };
    let down = async {
        let mut buf = vec![0u8; MAX_PIPE_CHUNK];
        let mut sealed = vec![0u8; MAX_NOISE_MSG];
        loop {
            let n = match tcp_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let len = match crate::util::lock(&c_down).encrypt(&buf[..n], &mut sealed) {
                Ok(len) => len,
                Err(_) => break,
            };
            if !super::spend(&core, &mut down_budget, len + 4) {
                break;
            }
            if output
                .send(Bytes::copy_from_slice(&sealed[..len]))
                .await
                .is_err()
            {
                break;
            }
        }
        output.get_mut().finish().ok();
    };
    tokio::select! {
        _ = futures::future::join(up, down) => {}
        _ = core.shutdown.cancelled() => {}
    }
    Ok(())
}

async fn send_record(
    output: &mut FramedWrite<quinn::SendStream, LengthDelimitedCodec>,
    cipher: &mut PipeCipher,
    plain: &[u8],
) -> Result<(), FrameError> {
    let mut sealed = vec![0u8; plain.len() + 64];
    let n = cipher.encrypt(plain, &mut sealed).map_err(bad)?;
    output
        .send(Bytes::copy_from_slice(&sealed[..n]))
        .await
        .map_err(bad)
}

async fn connect(
    core: &Core,
    host: &str,
    port: u16,
) -> Result<tokio::net::TcpStream, ConnectReply> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| ConnectReply::NotFound)?
        .collect();
    if addrs.is_empty() {
        return Err(ConnectReply::NotFound);
    }
    let permitted: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| allowed(core, a.ip()))
        .collect();
    if permitted.is_empty() {
        return Err(ConnectReply::Forbidden);
    }
    for addr in permitted {
        if let Ok(tcp) = tokio::net::TcpStream::connect(addr).await {
            tcp.set_nodelay(true).ok();
            return Ok(tcp);
        }
    }
    Err(ConnectReply::Unreachable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_ranges_the_pool_and_this_host_are_refused_whatever_the_config() {
        let pool: ipnet::Ipv4Net = "10.77.0.0/16".parse().unwrap();
        for ip in [
            "0.1.2.3",
            "127.0.0.1",
            "192.0.0.5",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.1",
            "203.0.113.9",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "10.77.3.4",
        ] {
            let ip: Ipv4Addr = ip.parse().unwrap();
            assert!(refused_range(ip, pool, true), "{ip} allowed");
        }
        assert!(refused_range("10.1.2.3".parse().unwrap(), pool, false));
        assert!(!refused_range("10.1.2.3".parse().unwrap(), pool, true));
        assert!(!refused_range(
            "93.184.216.34".parse().unwrap(),
            pool,
            false
        ));
        assert!(is_local_address(Ipv4Addr::LOCALHOST.into()));
        assert!(!is_local_address("192.0.2.1".parse().unwrap()));
        let pool6: ipnet::Ipv6Net = "fd54:6f70:7670::/64".parse().unwrap();
        for ip in [
            "::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b::7f00:1",
            "fd54:6f70:7670::9",
        ] {
            let ip: Ipv6Addr = ip.parse().unwrap();
            assert!(refused_range6(ip, pool6, true), "{ip} allowed");
        }
        assert!(refused_range6("fd00::1".parse().unwrap(), pool6, false));
        assert!(!refused_range6("fd00::1".parse().unwrap(), pool6, true));
        assert!(!refused_range6(
            "2606:4700::1111".parse().unwrap(),
            pool6,
            false
        ));
        // IPv4-mapped addresses get the IPv4 rules, not a way around them.
        let vpn = crate::node::config::VpnConfig::default();
        for ip in [
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
        ] {
            assert!(refused(ip.parse().unwrap(), &vpn), "{ip} allowed");
        }
        assert!(!refused("::ffff:93.184.216.34".parse().unwrap(), &vpn));
    }
}
