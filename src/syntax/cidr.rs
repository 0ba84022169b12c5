//! Address ranges in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or a bare address for one
//! host), for resource policies and trusted proxies. An IPv4-mapped IPv6 peer
//! (`::ffff:10.1.2.3`) matches IPv4 ranges.

use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` or a bare address; the host bits must be zero.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("/{p} is not a prefix length from 0 to {max}")),
            },
        };
        // An IPv4-mapped range (`::ffff:10.0.0.0/104`) is the IPv4 range it maps: peers are
        // compared in their IPv4 form, so kept as IPv6 it would match nobody.
        let (net, prefix) = match net {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
                Some(_) => {
                    return Err(format!(
                        "{s:?} is an IPv4-mapped range wider than the mapped block (/96): write the IPv4 range"
                    ))
                }
                None => (net, prefix),
            },
            v4 => (v4, prefix),
        };
        let c = Cidr { net, prefix };
        if c.masked(net) != Some(net) {
            return Err(format!(
                "{s:?} has host bits set (the range starts at {})",
                c.masked(net).map(|n| n.to_string()).unwrap_or_default()
            ));
        }
        Ok(c)
    }

    /// `ip` with the host bits cleared, when it is of this range's family.
    fn masked(&self, ip: IpAddr) -> Option<IpAddr> {
        match (self.net, ip) {
            (IpAddr::V4(_), IpAddr::V4(a)) => {
                let m = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                Some(IpAddr::V4((u32::from(a) & m).into()))
            }
            (IpAddr::V6(_), IpAddr::V6(a)) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                Some(IpAddr::V6((u128::from(a) & m).into()))
            }
            _ => None,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.masked(ip) == Some(self.net)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn matches_v4_v6_and_mapped_addresses() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.1.2")));
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::1")));
        let c = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c.contains(ip("2001:db8::1")));
        assert!(!c.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        // An IPv4-mapped range is its IPv4 range, for either form of a peer.
        let c = Cidr::parse("::ffff:10.77.0.0/112").unwrap();
        assert_eq!(c.to_string(), "10.77.0.0/16");
        assert!(c.contains(ip("10.77.0.1")));
        assert!(c.contains(ip("::ffff:10.77.200.1")));
        assert!(!c.contains(ip("10.78.0.1")));
        assert!(Cidr::parse("::ffff:127.0.0.1")
            .unwrap()
            .contains(ip("127.0.0.1")));
    }

    #[test]
    fn refuses_what_is_not_a_range() {
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "nope",
            "10.0.0.0/x",
            "::1/129",
            "",
            "::ffff:0.0.0.0/80",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
