//! Opening a TUN device with its address and MTU, and moving packets through it in batches.
//!
//! Devices are opened with offloads (`IFF_VNET_HDR`, TSO/USO): the kernel hands over TCP
//! super-packets of up to 64 KiB in one read, which [`TunReader`] splits into MTU-sized
//! packets, and [`TunWriter`] coalesces consecutive segments of a flow (GRO) before writing,
//! so the per-packet cost of the device's system calls is paid once per batch.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

pub use tun_rs::AsyncDevice;
use tun_rs::{GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

use crate::NetError;

/// Largest packet a TUN read can return.
const MAX_PACKET: usize = 65_535;
/// Room for one packet of a batch (TUN MTUs are at most this, in practice).
const SLOT: usize = 2048;

/// Creates (or opens) TUN device `name` with `addr/prefix` (and `v6` when given), `mtu`, up.
/// Needs `CAP_NET_ADMIN`.
pub fn open_tun(
    name: &str,
    addr: Ipv4Addr,
    prefix: u8,
    v6: Option<(Ipv6Addr, u8)>,
    mtu: u16,
) -> Result<AsyncDevice, NetError> {
    let mut builder = tun_rs::DeviceBuilder::new()
        .name(name)
        .mtu(mtu)
        .ipv4(addr, prefix, None);
    if let Some((addr6, prefix6)) = v6 {
        builder = builder.ipv6(addr6, prefix6);
    }
    builder
        .tx_queue_len(1000)
        .offload(true)
        .build_async()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::PermissionDenied => NetError::NeedsRights {
                commands: format!(
                    "ip tuntap add dev {name} mode tun vnet_hdr user $USER\n\
                     ip addr add {addr}/{prefix} dev {name}\nip link set {name} mtu {mtu} up"
                ),
            },
            _ => NetError::Io {
                what: format!("TUN device {name}"),
                source,
            },
        })
}

/// Reads packets from a TUN device a batch at a time.
pub struct TunReader {
    raw: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    count: usize,
}

impl TunReader {
    /// A reader for a device with this MTU (no packet it yields is longer).
    pub fn new(mtu: u16) -> Self {
        let slot = usize::from(mtu).max(SLOT);
        Self {
            raw: vec![0; VIRTIO_NET_HDR_LEN + MAX_PACKET],
            bufs: vec![vec![0; slot]; IDEAL_BATCH_SIZE],
            sizes: vec![0; IDEAL_BATCH_SIZE],
            count: 0,
        }
    }

    /// Waits for the next read from `device`; returns how many packets it held.
    pub async fn read(&mut self, device: &AsyncDevice) -> io::Result<usize> {
        self.count = 0;
        self.count = device
            .recv_multiple(&mut self.raw, &mut self.bufs, &mut self.sizes, 0)
            .await?;
        Ok(self.count)
    }

    /// The packets of the last read.
    pub fn packets(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs
            .iter()
            .zip(&self.sizes)
            .take(self.count)
            .map(|(buf, &n)| &buf[..n])
    }
}

/// Collects packets and writes them to a TUN device a batch at a time.
pub struct TunWriter {
    gro: GROTable,
    bufs: Vec<Vec<u8>>,
    len: usize,
}

impl Default for TunWriter {
    fn default() -> Self {
        Self {
            gro: GROTable::default(),
            bufs: (0..IDEAL_BATCH_SIZE)
                .map(|_| Vec::with_capacity(VIRTIO_NET_HDR_LEN + SLOT))
                .collect(),
            len: 0,
        }
    }
}

impl TunWriter {
    /// Whether the batch is full and must be flushed before the next push.
    pub fn is_full(&self) -> bool {
        self.len == self.bufs.len()
    }

    /// Whether the batch holds no packet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a packet of at most `max` bytes that `fill` writes; `fill` returns its real
    /// length, or `None` to leave it out. Returns whether the packet was added.
    pub fn push_with(&mut self, max: usize, fill: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        let Some(buf) = self.bufs.get_mut(self.len) else {
            return false;
        };
        buf.clear();
        buf.resize(VIRTIO_NET_HDR_LEN + max, 0);
        match fill(&mut buf[VIRTIO_NET_HDR_LEN..]) {
            Some(n) if n <= max => {
                buf.truncate(VIRTIO_NET_HDR_LEN + n);
                self.len += 1;
                true
            }
            _ => false,
        }
    }

    /// Writes the batch to `device` (coalescing what it can) and empties it; returns how
    /// many packets it held.
    pub async fn flush(&mut self, device: &AsyncDevice) -> io::Result<usize> {
        let count = std::mem::take(&mut self.len);
        if count == 0 {
            return Ok(0);
        }
        let result = device
            .send_multiple(&mut self.gro, &mut self.bufs[..count], VIRTIO_NET_HDR_LEN)
            .await;
        for buf in &mut self.bufs[..count] {
            if buf.capacity() > 4 * (VIRTIO_NET_HDR_LEN + SLOT) {
                // A coalesced super-packet grew this slot: give the memory back.
                *buf = Vec::with_capacity(VIRTIO_NET_HDR_LEN + SLOT);
            }
        }
        result.map(|_| count)
    }
}
