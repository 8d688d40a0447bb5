//! Opening a TUN device with its address and MTU.

use std::net::Ipv4Addr;

pub use tun_rs::AsyncDevice;

use crate::NetError;

/// Creates (or opens) TUN device `name` with `addr/prefix`, `mtu`, up. Needs `CAP_NET_ADMIN`.
pub fn open_tun(name: &str, addr: Ipv4Addr, prefix: u8, mtu: u16) -> Result<AsyncDevice, NetError> {
    tun_rs::DeviceBuilder::new()
        .name(name)
        .mtu(mtu)
        .ipv4(addr, prefix, None)
        .tx_queue_len(1000)
        .build_async()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::PermissionDenied => NetError::NeedsRights {
                commands: format!(
                    "ip tuntap add dev {name} mode tun user $USER\nip addr add {addr}/{prefix} dev {name}\n\
                     ip link set {name} mtu {mtu} up"
                ),
            },
            _ => NetError::Io {
                what: format!("TUN device {name}"),
                source,
            },
        })
}
