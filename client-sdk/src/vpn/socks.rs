//! A local SOCKS5 proxy (RFC 1928: no authentication, CONNECT) over a tunnel's proxied
//! connections: host names travel to the exit and resolve there. Needs no root.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use top_proto::identity::Identity;
use top_proto::vpn::ConnectReply;
use tracing::debug;

use super::tunnel::{Tunnel, TunnelOptions};
use crate::error::ClientError;

/// How long a SOCKS client may take to send its request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The tunnel the proxy uses, opened on first use and again after it fails.
pub struct TunnelSlot {
    identity: Identity,
    options: TunnelOptions,
    current: tokio::sync::Mutex<Option<Arc<Tunnel>>>,
}

impl TunnelSlot {
    /// A slot that opens tunnels with these options.
    pub fn new(identity: Identity, options: TunnelOptions) -> Self {
        Self {
            identity,
            options,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The open tunnel, reconnecting if it failed.
    pub async fn get(&self) -> Result<Arc<Tunnel>, ClientError> {
        let mut current = self.current.lock().await;
        if let Some(t) = current.as_ref().filter(|t| !t.is_closed()) {
            return Ok(t.clone());
        }
        let tunnel = Arc::new(Tunnel::open(self.identity.clone(), self.options.clone()).await?);
        *current = Some(tunnel.clone());
        Ok(tunnel)
    }
}

/// Serves SOCKS5 clients from `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, slot: Arc<TunnelSlot>, shutdown: CancellationToken) {
    loop {
        let (tcp, from) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!("accept: {e}");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let slot = slot.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = serve_client(tcp, &slot) => if let Err(e) = result {
                    debug!("socks client {from}: {e}");
                },
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// SOCKS5 reply codes.
fn reply_code(reply: ConnectReply) -> u8 {
    match reply {
        ConnectReply::Connected => 0,
        ConnectReply::Forbidden | ConnectReply::PaymentRequired => 2,
        ConnectReply::NotFound => 4,
        ConnectReply::Unreachable => 5,
    }
}

async fn reply(tcp: &mut TcpStream, code: u8) -> std::io::Result<()> {
    tcp.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]).await
}

/// Reads the greeting and request; returns the destination.
async fn read_request(tcp: &mut TcpStream) -> Result<(String, u16), std::io::Error> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Err(bad("not SOCKS version 5"));
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    tcp.read_exact(&mut methods).await?;
    if !methods.contains(&0) {
        tcp.write_all(&[5, 0xff]).await?;
        return Err(bad("client offers no method without authentication"));
    }
    tcp.write_all(&[5, 0]).await?;
    let mut req = [0u8; 4];
    tcp.read_exact(&mut req).await?;
    if req[0] != 5 {
        return Err(bad("bad request version"));
    }
    if req[1] != 1 {
        reply(tcp, 7).await?;
        return Err(bad("only CONNECT is supported"));
    }
    let host = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            tcp.read_exact(&mut a).await?;
            Ipv4Addr::from(a).to_string()
        }
        3 => {
            let len = tcp.read_u8().await?;
            let mut name = vec![0u8; usize::from(len)];
            tcp.read_exact(&mut name).await?;
            String::from_utf8(name).map_err(|_| bad("host name is not UTF-8"))?
        }
        4 => {
            let mut a = [0u8; 16];
            tcp.read_exact(&mut a).await?;
            Ipv6Addr::from(a).to_string()
        }
        _ => {
            reply(tcp, 8).await?;
            return Err(bad("unknown address type"));
        }
    };
    let port = tcp.read_u16().await?;
    Ok((host, port))
}

async fn serve_client(mut tcp: TcpStream, slot: &TunnelSlot) -> Result<(), ClientError> {
    let (host, port) = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_request(&mut tcp))
        .await
        .map_err(|_| ClientError::from(crate::error::VpnError::SocksTimeout))??;
    let tunnel = match slot.get().await {
        Ok(t) => t,
        Err(e) => {
            reply(&mut tcp, 1).await.ok();
            return Err(e);
        }
    };
    let pipe = match tunnel.connect_tcp(&host, port).await {
        Ok(p) => p,
        Err(ClientError::Proxy(why)) => {
            reply(&mut tcp, reply_code(why)).await.ok();
            return Err(ClientError::Proxy(why));
        }
        Err(e) => {
            reply(&mut tcp, 1).await.ok();
            return Err(e);
        }
    };
    reply(&mut tcp, 0).await?;
    tcp.set_nodelay(true).ok();
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let (mut writer, mut reader) = pipe.split();
    let up = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match tcp_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if writer.send(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        writer.close().await.ok();
    };
    let down = async {
        while let Ok(Some(data)) = reader.recv().await {
            if tcp_write.write_all(&data).await.is_err() {
                break;
            }
        }
        tcp_write.shutdown().await.ok();
    };
    futures::future::join(up, down).await;
    Ok(())
}
