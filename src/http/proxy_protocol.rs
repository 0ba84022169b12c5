//! The PROXY protocol (HAProxy's, versions 1 and 2), which load balancers in front of the
//! gateway (HAProxy, AWS NLB, Envoy) put before the client's bytes to say whom the connection
//! is for. Parsing only: the listener decides whether to believe it (`server.trusted_proxies`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version 2 signature.
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 1 line (the spec's limit).
const V1_MAX: usize = 107;
/// Longest version 2 header accepted (addresses and TLVs).
const V2_MAX: usize = 16 + 1024;

/// What the start of a connection says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// More bytes are needed.
    Incomplete,
    /// A whole header of `len` bytes; `source` is the client it names (`None` for `UNKNOWN`,
    /// `LOCAL` or an address family other than TCP over IPv4/IPv6).
    Done {
        len: usize,
        source: Option<SocketAddr>,
    },
}

/// Parses a header at the start of `buf`; the error says why it is not one.
pub(crate) fn parse(buf: &[u8]) -> Result<Header, &'static str> {
    let n = buf.len().min(V2_SIG.len());
    if buf[..n] == V2_SIG[..n] {
        return if n < V2_SIG.len() {
            Ok(Header::Incomplete)
        } else {
            v2(buf)
        };
    }
    let n = buf.len().min(6);
    if buf[..n] != b"PROXY "[..n] {
        return Err("the connection does not start with a PROXY protocol header");
    }
    v1(buf)
}

fn v1(buf: &[u8]) -> Result<Header, &'static str> {
    let bad = "malformed PROXY protocol v1 header";
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(bad)
        } else {
            Ok(Header::Incomplete)
        };
    };
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| bad)?;
    let parts: Vec<&str> = line.split(' ').collect();
    let source = match parts.as_slice() {
        ["UNKNOWN", ..] => None,
        [fam @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src.parse().map_err(|_| bad)?;
            if (*fam == "TCP4") != ip.is_ipv4() {
                return Err(bad);
            }
            let port: u16 = sport.parse().map_err(|_| bad)?;
            Some(SocketAddr::new(ip, port))
        }
        _ => return Err(bad),
    };
    Ok(Header::Done {
        len: end + 2,
        source,
    })
}

fn v2(buf: &[u8]) -> Result<Header, &'static str> {
    if buf.len() < 16 {
        return Ok(Header::Incomplete);
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Err("unsupported PROXY protocol version");
    }
    let len = 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if len > V2_MAX {
        return Err("PROXY protocol v2 header too long");
    }
    if buf.len() < len {
        return Ok(Header::Incomplete);
    }
    let body = &buf[16..len];
    let source = match (ver_cmd & 0x0f, fam) {
        // LOCAL: the proxy's own connection (health checks): keep the peer.
        (0, _) => None,
        (1, 0x11) if body.len() >= 12 => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(body[0], body[1], body[2], body[3])),
            u16::from_be_bytes([body[8], body[9]]),
        )),
        (1, 0x21) if body.len() >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(a)),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        (1, 0x11 | 0x21) => return Err("PROXY protocol v2 addresses are truncated"),
        (1, _) => None,
        _ => return Err("unsupported PROXY protocol v2 command"),
    };
    Ok(Header::Done { len, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            Ok(Header::Done {
                len: 41,
                source: Some("192.0.2.7:56324".parse().unwrap())
            })
        );
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 443\r\n";
        assert!(
            matches!(parse(h), Ok(Header::Done { source: Some(s), .. }) if s.ip() == "2001:db8::1".parse::<IpAddr>().unwrap())
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Header::Done {
                len: 15,
                source: None
            })
        );
        assert_eq!(parse(b"PROXY TCP4 192.0"), Ok(Header::Incomplete));
        assert_eq!(parse(b"PRO"), Ok(Header::Incomplete));
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 x y 1 2\r\n",
            b"PROXY TCP4 2001:db8::1 ::2 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.5 99999 1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(
            parse(&[b'P', b'R', b'O', b'X', b'Y', b' ', b'A'].repeat(20)).is_err(),
            "no CRLF within 107 bytes"
        );
    }

    #[test]
    fn version_2() {
        let mut h = V2_SIG.to_vec();
        h.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 1, 187,
        ]);
        h.extend_from_slice(b"GET /");
        assert_eq!(
            parse(&h),
            Ok(Header::Done {
                len: 28,
                source: Some("192.0.2.7:56324".parse().unwrap())
            })
        );
        assert_eq!(parse(&h[..20]), Ok(Header::Incomplete));
        let mut local = V2_SIG.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            parse(&local),
            Ok(Header::Done {
                len: 16,
                source: None
            })
        );
        let mut short = V2_SIG.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(parse(&short).is_err());
        let mut long = V2_SIG.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(parse(&long).is_err());
        let mut v3 = V2_SIG.to_vec();
        v3.extend_from_slice(&[0x31, 0x11, 0, 0]);
        assert!(parse(&v3).is_err());
    }
}
