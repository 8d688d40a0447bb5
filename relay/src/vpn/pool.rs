//! The exit's pool of client tunnel addresses.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Hands out the addresses of a prefix: the first host is the exit's own, the rest go to clients.
#[derive(Debug)]
pub struct Pool {
    net: Ipv4Net,
    used: BTreeSet<Ipv4Addr>,
}

impl Pool {
    /// A pool over `net` (at least a /30).
    pub fn new(net: Ipv4Net) -> Result<Self, String> {
        if net.prefix_len() > 30 {
            return Err(format!("vpn.pool {net} is too small (at most /30)"));
        }
        Ok(Self {
            net: net.trunc(),
            used: BTreeSet::new(),
        })
    }

    /// The prefix.
    pub fn net(&self) -> Ipv4Net {
        self.net
    }

    /// The exit's own address (first host).
    pub fn gateway(&self) -> Ipv4Addr {
        self.net.hosts().next().unwrap_or(self.net.network())
    }

    /// A free client address, taken.
    pub fn take(&mut self) -> Option<Ipv4Addr> {
        let gateway = self.gateway();
        let free = self
            .net
            .hosts()
            .find(|a| *a != gateway && !self.used.contains(a))?;
        self.used.insert(free);
        Some(free)
    }

    /// Returns an address to the pool.
    pub fn give_back(&mut self, addr: Ipv4Addr) {
        self.used.remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_each_host_once_and_reuses_returned_ones() {
        let mut p = Pool::new("10.77.0.0/30".parse().unwrap()).unwrap();
        assert_eq!(p.gateway(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(p.take(), Some(Ipv4Addr::new(10, 77, 0, 2)));
        assert_eq!(p.take(), None);
        p.give_back(Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(p.take(), Some(Ipv4Addr::new(10, 77, 0, 2)));
        assert!(Pool::new("10.77.0.0/31".parse().unwrap()).is_err());
    }
}
