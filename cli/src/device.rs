//! The full-device VPN (`top vpn up`, root): a TUN device carrying the tunnel, routes (all or
//! split), DNS through the tunnel, the kill switch, reconnection, and a status file; everything
//! is undone on shutdown, or by [`down`] from another process if this one died.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use top_netconf::client::{Applied, ClientNetPlan};
use top_netconf::tun::{AsyncDevice, TunReader, TunWriter, open_tun};
use top_netconf::{Cmd, NetError};
use top_proto::identity::Identity;
use top_proto::vpn::cipher::room_to_open;
use tracing::{info, warn};

use top_client::ClientError;
use top_client::vpn::tunnel::{Tunnel, TunnelOptions};

/// Why the device VPN failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The tunnel or the relay failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A host network change failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A file or process operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The VPN cannot do what was asked.
    #[error("{0}")]
    Vpn(String),
    /// The tunnel ended.
    #[error("the tunnel closed")]
    Closed,
}

/// File names in the VPN state directory.
const STATUS_FILE: &str = "status.json";
const APPLIED_FILE: &str = "applied.json";

/// What `top vpn up` asked for.
#[derive(Clone, Debug)]
pub struct VpnOptions {
    /// Exit, entry and payment.
    pub tunnel: TunnelOptions,
    /// The TUN device's name.
    pub tun: String,
    /// Split tunnelling: only these prefixes go through the tunnel (empty: everything).
    pub routes: Vec<Ipv4Net>,
    /// The DNS resolver to use (default: the one the exit offers).
    pub dns: Option<Ipv4Addr>,
    /// Drop everything outside the tunnel while it is up or reconnecting.
    pub kill_switch: bool,
    /// Keep the directly connected networks reachable with the kill switch on.
    pub allow_lan: bool,
    /// Where the status and the record of host changes live.
    pub state_dir: PathBuf,
}

/// What `top vpn status` shows (written by the running client once a second).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VpnStatus {
    /// The client's process id.
    pub pid: u32,
    /// `connecting`, `up` or `reconnecting`.
    pub state: String,
    /// The exit relay.
    pub exit: String,
    /// The entry relay of a 2-hop route.
    pub via: Option<String>,
    /// The TUN device.
    pub tun: String,
    /// The tunnel address.
    pub address: String,
    /// The tunnel's IPv6 address, when the exit carries IPv6.
    #[serde(default)]
    pub address6: Option<String>,
    /// Prefixes through the tunnel (`0.0.0.0/0` for all).
    pub routes: Vec<String>,
    /// DNS resolver in use.
    pub dns: Option<String>,
    /// Whether the kill switch is on.
    pub kill_switch: bool,
    /// Datagram bytes sent and received.
    pub bytes_sent: u64,
    /// Datagram bytes received.
    pub bytes_received: u64,
    /// Of the bytes sent, those the exit acknowledged receiving (its signed count).
    #[serde(default)]
    pub bytes_acked: u64,
    /// TOP signed to the exit so far.
    pub paid_exit: String,
    /// TOP signed to the entry so far.
    pub paid_entry: String,
    /// Reconnections so far.
    pub reconnects: u64,
    /// Unix milliseconds the current tunnel came up.
    pub since_ms: u64,
    /// The last error, if the tunnel failed.
    pub last_error: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    replace_file(path, &text)
}

/// Writes `text` to `path` whole (through a temporary file renamed over it).
fn replace_file(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// [`write_json`] with the file written on tokio's blocking threads.
async fn write_json_async<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || replace_file(&path, &text))
        .await
        .map_err(std::io::Error::other)?
}

/// Whether `path` is ours alone: owned by this user (root, for `sudo top vpn …`) and writable
/// by nobody else, and so is its directory. State that others could have written is never
/// acted on: as root, a forged record would undo arbitrary "changes" or signal any process.
fn trusted(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    let me = unsafe { libc::geteuid() };
    let ours = |p: &Path| {
        std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() == me && m.mode() & 0o022 == 0)
    };
    ours(path) && path.parent().is_some_and(ours)
}

/// Whether `pid` runs this very program (a status file's pid could name anything).
fn is_this_program(pid: u32) -> bool {
    let (Ok(exe), Ok(me)) = (
        std::fs::read_link(format!("/proc/{pid}/exe")),
        std::env::current_exe(),
    ) else {
        return false;
    };
    exe == me
}

/// Whether `path` may be believed for reading: written by this user or by root (`sudo top vpn
/// up`), writable by nobody else, and so is its directory.
fn trusted_to_read(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    let me = unsafe { libc::geteuid() };
    let sound = |p: &Path| {
        std::fs::symlink_metadata(p)
            .is_ok_and(|m| (m.uid() == me || m.uid() == 0) && m.mode() & 0o022 == 0)
    };
    sound(path) && path.parent().is_some_and(sound)
}

/// Reads the status the running client wrote, if one runs.
pub fn read_status(state_dir: &Path) -> Option<VpnStatus> {
    let path = state_dir.join(STATUS_FILE);
    if !trusted_to_read(&path) {
        return None;
    }
    let text = std::fs::read(path).ok()?;
    let status: VpnStatus = serde_json::from_slice(&text).ok()?;
    process_alive(status.pid).then_some(status)
}

/// Whether `pid` runs (a zombie, exited but not yet reaped by its parent, does not).
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

fn amount(units: u64) -> String {
    ledger_lite::Amount::from_units(u128::from(units)).to_string()
}

/// Brings the VPN up and keeps it up until `shutdown`; then restores the host.
pub async fn run(
    identity: Identity,
    opts: VpnOptions,
    shutdown: CancellationToken,
) -> Result<(), DeviceError> {
    std::fs::create_dir_all(&opts.state_dir)?;
    if let Some(s) = read_status(&opts.state_dir) {
        return Err(DeviceError::Vpn(format!(
            "a VPN is already up (pid {}); run `top vpn down` first",
            s.pid
        )));
    }
    // A previous client that died left its changes recorded: undo them first.
    down_leftovers(&opts.state_dir);
    let mut tunnel = Tunnel::open(identity.clone(), opts.tunnel.clone()).await?;
    // Every address the tunnel's packets go to is one relay's (2 hops: the entry's ports).
    let outside = tunnel.outside();
    let relay = match outside[0] {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(_) => {
            return Err(DeviceError::Vpn("IPv6 relays are not supported yet".into()));
        }
    };
    let relay_ports: Vec<u16> = outside.iter().map(|a| a.port()).collect();
    let v6 = tunnel.address6();
    let device = open_tun(
        &opts.tun,
        tunnel.address(),
        32,
        v6.map(|a| (a, 128)),
        tunnel.mtu(),
    )?;
    let dns = opts.dns.or(tunnel.lease().dns.map(Ipv4Addr::from));
    let plan = ClientNetPlan {
        tun: opts.tun.clone(),
        relay,
        relay_ports,
        routes: opts.routes.clone(),
        dns,
        kill_switch: opts.kill_switch,
        allow_lan: opts.allow_lan,
        ipv6: v6.is_some(),
    };
    let applied_path = opts.state_dir.join(APPLIED_FILE);
    let mut applied = Applied::default();
    let result = applied.apply(&plan, |a| {
        if let Err(e) = write_json(&applied_path, a) {
            warn!("recording host changes: {e}");
        }
    });
    if let Err(e) = result {
        restore(&mut applied, &applied_path);
        return Err(e.into());
    }
    let mut status = VpnStatus {
        pid: std::process::id(),
        state: "up".into(),
        exit: opts.tunnel.exit.to_string(),
        via: opts.tunnel.via.as_ref().map(|v| v.to_string()),
        tun: opts.tun.clone(),
        address: tunnel.address().to_string(),
        address6: v6.map(|a| a.to_string()),
        routes: if opts.routes.is_empty() {
            vec!["0.0.0.0/0".into()]
        } else {
            opts.routes.iter().map(|r| r.to_string()).collect()
        },
        dns: dns.map(|d| d.to_string()),
        kill_switch: opts.kill_switch,
        since_ms: now_ms(),
        ..VpnStatus::default()
    };
    info!(address = %tunnel.address(), mtu = tunnel.mtu(), "VPN up");
    let status_path = opts.state_dir.join(STATUS_FILE);
    let mut before = Totals::default();
    loop {
        let outcome = tokio::select! {
            e = pump(&device, &mut tunnel, &status_path, &mut status, before) => Some(e),
            _ = shutdown.cancelled() => None,
        };
        before = before.plus(&tunnel);
        let (entry, exit) = tunnel.billing();
        if let Some(home) = opts.state_dir.parent() {
            let home = crate::home::Home(home.to_path_buf());
            let exit_relay = opts.tunnel.exit.to_string();
            crate::spending::record(&home, &exit_relay, exit, &tunnel.usage());
            if let (Some(via), Some(usage)) = (&opts.tunnel.via, tunnel.entry_usage()) {
                crate::spending::record(&home, &via.to_string(), entry, &usage);
            }
        }
        let Some(error) = outcome else {
            tunnel.close_and_wait().await;
            break;
        };
        tunnel.close();
        warn!("tunnel lost: {error}; reconnecting");
        status.state = "reconnecting".into();
        status.last_error = Some(error.to_string());
        write_json(&status_path, &status).ok();
        let reopened = tokio::select! {
            t = reconnect(&identity, &opts.tunnel) => t,
            _ = shutdown.cancelled() => break,
        };
        tunnel = reopened;
        status.reconnects += 1;
        if tunnel.address().to_string() != status.address {
            // The new address goes on before the old one comes off: a device left without
            // an address loses the routes through it.
            let (new, old) = (
                format!("{}/32", tunnel.address()),
                format!("{}/32", status.address),
            );
            Cmd::ip(&["addr", "add", &new, "dev", &opts.tun]).run()?;
            Cmd::ip(&["addr", "del", &old, "dev", &opts.tun]).run().ok();
            status.address = tunnel.address().to_string();
        }
        let address6 = tunnel.address6().map(|a| a.to_string());
        if address6 != status.address6 {
            // IPv6 follows the same way (its routes go by device, not by address).
            if let Some(new) = &address6 {
                let new = format!("{new}/128");
                Cmd::ip(&["addr", "add", &new, "dev", &opts.tun, "nodad"]).run()?;
            }
            if let Some(old) = &status.address6 {
                let old = format!("{old}/128");
                Cmd::ip(&["addr", "del", &old, "dev", &opts.tun]).run().ok();
            }
            status.address6 = address6;
        }
        status.state = "up".into();
        status.since_ms = now_ms();
    }
    drop(device);
    restore(&mut applied, &applied_path);
    std::fs::remove_file(&status_path).ok();
    info!("VPN down; routes and DNS restored");
    Ok(())
}

/// Re-opens the tunnel with growing pauses (the kill switch keeps traffic in meanwhile).
async fn reconnect(identity: &Identity, options: &TunnelOptions) -> Tunnel {
    let mut pause = Duration::from_millis(250);
    loop {
        match Tunnel::open(identity.clone(), options.clone()).await {
            Ok(t) => return t,
            Err(e) => {
                warn!("reconnecting: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Counts of the tunnels before the current one (the client reconnects with a new tunnel).
#[derive(Clone, Copy, Default)]
struct Totals {
    sent: u64,
    received: u64,
    acked: u64,
    paid_exit: u64,
    paid_entry: u64,
}

impl Totals {
    /// These counts and `tunnel`'s.
    fn plus(self, tunnel: &Tunnel) -> Self {
        let stats = tunnel.stats();
        let (entry, exit) = tunnel.billing();
        let signed = |b: Option<&top_client::BillingState>| {
            b.map_or(0, |b| b.signed.load(Ordering::Relaxed))
        };
        Self {
            sent: self.sent + stats.bytes_sent.load(Ordering::Relaxed),
            received: self.received + stats.bytes_received.load(Ordering::Relaxed),
            acked: self.acked + stats.bytes_acked.load(Ordering::Relaxed),
            paid_exit: self.paid_exit + signed(exit),
            paid_entry: self.paid_entry + signed(entry),
        }
    }
}

/// Carries packets between the TUN device and the tunnel until the tunnel fails.
async fn pump(
    device: &AsyncDevice,
    tunnel: &mut Tunnel,
    status_path: &Path,
    status: &mut VpnStatus,
    before: Totals,
) -> DeviceError {
    let (Some(mut sender), Some(mut receiver)) = (tunnel.sender(), tunnel.receiver()) else {
        return DeviceError::Closed;
    };
    let mtu = tunnel.mtu();
    let up = async {
        let mut reader = TunReader::new(mtu);
        loop {
            if let Err(e) = reader.read(device).await {
                return DeviceError::Io(e);
            }
            for packet in reader.packets() {
                if let Err(e) = sender.send(packet) {
                    return DeviceError::Client(e);
                }
            }
        }
    };
    let down = async {
        let mut writer = TunWriter::default();
        loop {
            let mut next = match receiver.next_datagram().await {
                Ok(d) => Some(d),
                Err(e) => return DeviceError::Client(e),
            };
            while let Some(datagram) = next.take() {
                // Room for the tag too: the datagram is decrypted in place.
                let max = room_to_open(&datagram);
                writer.push_with(max, |out| receiver.open(&datagram, out));
                if !writer.is_full() {
                    next = receiver.waiting_datagram();
                }
            }
            if let Err(e) = writer.flush(device).await {
                return DeviceError::Io(e);
            }
        }
    };

    let report = async {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            let now = before.plus(tunnel);
            status.bytes_sent = now.sent;
            status.bytes_received = now.received;
            status.bytes_acked = now.acked;
            status.paid_exit = amount(now.paid_exit);
            status.paid_entry = amount(now.paid_entry);
            // Off the runtime's one thread: a slow disk must not stall the tunnel.
            if let Err(e) = write_json_async(status_path, &*status).await {
                warn!("writing VPN status: {e}");
            }
        }
    };
    tokio::select! {
        e = up => e,
        e = down => e,
        _ = tunnel.closed() => DeviceError::Vpn("the exit ended the tunnel".into()),
        _ = report => DeviceError::Closed,
    }
}

fn restore(applied: &mut Applied, path: &Path) {
    let problems = applied.undo();
    for p in &problems {
        warn!("restoring the network: {p}");
    }
    if problems.is_empty() {
        std::fs::remove_file(path).ok();
    } else {
        write_json(path, applied).ok();
    }
}

/// Undoes host changes a dead client left recorded; returns whether there were any.
fn down_leftovers(state_dir: &Path) -> bool {
    let path = state_dir.join(APPLIED_FILE);
    if path.exists() && !trusted(&path) {
        warn!(
            "{} is not owned by this user alone; not acting on it",
            path.display()
        );
        return false;
    }
    let Ok(text) = std::fs::read(&path) else {
        return false;
    };
    match serde_json::from_slice::<Applied>(&text) {
        Ok(mut applied) => {
            restore(&mut applied, &path);
            true
        }
        Err(e) => {
            warn!("{} is unreadable ({e}); remove it by hand", path.display());
            false
        }
    }
}

/// Stops the running client (it restores the host itself), or, if it died, restores the host
/// from its record. Returns what was done.
pub async fn down(state_dir: &Path) -> Result<String, DeviceError> {
    if let Some(status) = read_status(state_dir) {
        if !is_this_program(status.pid) {
            return Err(DeviceError::Vpn(format!(
                "pid {} in the VPN status is not a `top` client; not signalling it",
                status.pid
            )));
        }
        let pid = i32::try_from(status.pid).map_err(|_| DeviceError::Vpn("bad pid".into()))?;
        // SAFETY: kill(2) with a pid read from our own status file and a valid signal number.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        if sent != 0 {
            return Err(DeviceError::Io(std::io::Error::last_os_error()));
        }
        for _ in 0..200 {
            if !process_alive(status.pid) {
                return Ok(format!("VPN down (stopped pid {})", status.pid));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        return Err(DeviceError::Vpn(format!(
            "pid {} did not stop within 10 s",
            status.pid
        )));
    }
    if down_leftovers(state_dir) {
        std::fs::remove_file(state_dir.join(STATUS_FILE)).ok();
        return Ok("VPN was not running; restored the routes, DNS and kill switch it left".into());
    }
    Err(DeviceError::Net(NetError::Parse("no VPN is up".into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn state_others_could_write_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let file = dir.path().join(APPLIED_FILE);
        std::fs::write(&file, b"{}").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(trusted(&file));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(!trusted(&file), "world-writable file");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(!trusted(&file), "world-writable directory");
        assert!(!is_this_program(1), "pid 1 is not this test");
        assert!(is_this_program(std::process::id()));
    }
}
