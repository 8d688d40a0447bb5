//! The exit's pool of client tunnel addresses: IPv4 addresses handed out one by one, and
//! each client's IPv6 address derived from its IPv4 one (the same host number in the IPv6
//! prefix), so either finds the tunnel without a second table.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// How IPv4 tunnel addresses map into the IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPlan {
    /// The IPv4 pool.
    pub net: Ipv4Net,
    /// The IPv6 pool, when the exit carries IPv6.
    pub net6: Option<Ipv6Net>,
}

impl AddressPlan {
    /// A plan over `net` and `net6`; the IPv6 prefix must hold as many hosts as the IPv4 one.
    pub fn new(net: Ipv4Net, net6: Option<Ipv6Net>) -> Result<Self, String> {
        if let Some(n6) = net6
            && 128 - u32::from(n6.prefix_len()) < 32 - u32::from(net.prefix_len())
        {
            return Err(format!(
                "vpn.pool6 {n6} is smaller than vpn.pool {net} (it needs a host per address)"
            ));
        }
        Ok(Self {
            net: net.trunc(),
            net6: net6.map(|n| n.trunc()),
        })
    }

    /// The IPv6 address of the client holding `v4`.
    pub fn v6_of(&self, v4: Ipv4Addr) -> Option<Ipv6Addr> {
        let net6 = self.net6?;
        let host = u32::from(v4).checked_sub(u32::from(self.net.network()))?;
        Some(Ipv6Addr::from(
            u128::from(net6.network()) | u128::from(host),
        ))
    }

    /// The IPv4 address of the client holding `v6` (`None` outside the IPv6 pool).
    pub fn v4_of(&self, v6: Ipv6Addr) -> Option<Ipv4Addr> {
        let net6 = self.net6?;
        if !net6.contains(&v6) {
            return None;
        }
        let host = u32::try_from(u128::from(v6) - u128::from(net6.network())).ok()?;
        let v4 = Ipv4Addr::from(u32::from(self.net.network()).checked_add(host)?);
        self.net.contains(&v4).then_some(v4)
    }

    /// The exit's own IPv6 address (the same host number as its IPv4 gateway).
    pub fn gateway6(&self, gateway: Ipv4Addr) -> Option<Ipv6Addr> {
        self.v6_of(gateway)
    }
}

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

    #[test]
    fn ipv6_addresses_follow_the_ipv4_ones_both_ways() {
        let plan = AddressPlan::new(
            "10.77.0.0/24".parse().unwrap(),
            Some("fd54:6f70:7670::/64".parse().unwrap()),
        )
        .unwrap();
        let v4 = Ipv4Addr::new(10, 77, 0, 9);
        let v6 = plan.v6_of(v4).unwrap();
        assert_eq!(v6, "fd54:6f70:7670::9".parse::<Ipv6Addr>().unwrap());
        assert_eq!(plan.v4_of(v6), Some(v4));
        // Outside either pool: no tunnel.
        assert_eq!(plan.v4_of("fd54:6f70:7670::1:0".parse().unwrap()), None);
        assert_eq!(plan.v4_of("2001:db8::9".parse().unwrap()), None);
        assert_eq!(plan.v6_of(Ipv4Addr::new(10, 0, 0, 1)), None);
        let none = AddressPlan::new("10.77.0.0/24".parse().unwrap(), None).unwrap();
        assert_eq!(none.v6_of(v4), None);
        assert!(
            AddressPlan::new(
                "10.0.0.0/8".parse().unwrap(),
                Some("fd00::/120".parse().unwrap())
            )
            .is_err()
        );
    }
}
