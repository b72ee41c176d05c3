//! The destination guard: a pivot app's URL must not reach the node's own network.
//!
//! Customers choose the URLs; without a guard, a callflow could make pivot request its
//! loopback admin ports, a cloud metadata service or the private network (SSRF). Addresses are
//! checked after DNS resolution (by [`GuardedResolver`], so a name cannot be re-pointed between
//! check and connect), IP literals before connecting, and both again on every redirect hop.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    Loopback,
    LinkLocal,
    Private,
    Metadata,
    /// Unspecified, broadcast, multicast, reserved or documentation ranges.
    NotRoutable,
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockReason::Loopback => "a loopback address",
            BlockReason::LinkLocal => "a link-local address",
            BlockReason::Private => "a private address",
            BlockReason::Metadata => "a cloud metadata address",
            BlockReason::NotRoutable => "not a routable unicast address",
        })
    }
}

/// A refused destination, carried through reqwest's error chain to name the failure cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ip} is {reason}; add it to webhook.allow_cidrs to allow it")]
pub struct Blocked {
    pub ip: IpAddr,
    pub reason: BlockReason,
}

/// A name that did not resolve, carried through reqwest's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{host} does not resolve: {detail}")]
pub struct DnsFailure {
    pub host: String,
    pub detail: String,
}

/// Decides which addresses pivot may send requests to.
#[derive(Debug, Clone, Default)]
pub struct DestinationGuard {
    allow: Vec<IpNet>,
}

impl DestinationGuard {
    /// A guard that refuses internal addresses except those inside `allow`.
    pub fn new(allow: Vec<IpNet>) -> DestinationGuard {
        DestinationGuard { allow }
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), Blocked> {
        let ip = canonical(ip);
        match classify(ip) {
            Some(reason) if !self.allow.iter().any(|net| net.contains(&ip)) => {
                Err(Blocked { ip, reason })
            }
            _ => Ok(()),
        }
    }
}

/// IPv4 addresses written as IPv6 (`::ffff:10.0.0.1`, NAT64 `64:ff9b::a00:1`) are judged as
/// the IPv4 address they reach.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

fn classify(ip: IpAddr) -> Option<BlockReason> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<BlockReason> {
    let [a, b, c, d] = ip.octets();
    // Metadata first: 169.254.169.254 is also link-local, but "metadata" says more.
    let metadata = [
        Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OpenStack
        Ipv4Addr::new(169, 254, 170, 2),   // AWS ECS task metadata
        Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
        Ipv4Addr::new(168, 63, 129, 16),   // Azure wire server (a public address)
    ];
    if metadata.contains(&ip) {
        return Some(BlockReason::Metadata);
    }
    if ip.is_loopback() {
        Some(BlockReason::Loopback)
    } else if ip.is_link_local() {
        Some(BlockReason::LinkLocal)
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        // RFC 1918 and the carrier-grade NAT range, which is private in practice.
        Some(BlockReason::Private)
    } else if ip.is_unspecified()
        || a == 0
        || ip.is_broadcast()
        || ip.is_multicast()
        || a >= 240
        || (a, b, c) == (192, 0, 2)
        || (a, b, c) == (198, 51, 100)
        || (a, b, c) == (203, 0, 113)
        || (a == 198 && (b == 18 || b == 19))
        || (a, b, c, d) == (192, 0, 0, 9)
    {
        Some(BlockReason::NotRoutable)
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<BlockReason> {
    let first = ip.segments()[0];
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Some(BlockReason::Metadata)
    } else if ip.is_loopback() {
        Some(BlockReason::Loopback)
    } else if first & 0xffc0 == 0xfe80 {
        Some(BlockReason::LinkLocal)
    } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
        // Unique local addresses, and the deprecated site-local range.
        Some(BlockReason::Private)
    } else if ip.is_unspecified()
        || ip.is_multicast()
        || first == 0x2001 && ip.segments()[1] == 0xdb8
    {
        Some(BlockReason::NotRoutable)
    } else {
        None
    }
}

/// reqwest's resolver with the guard applied to every answer: only permitted addresses are
/// returned, and a name with none left fails with [`Blocked`].
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    pub(crate) guard: Arc<DestinationGuard>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.guard);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let answers = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| DnsFailure {
                    host: host.clone(),
                    detail: e.to_string(),
                })?;
            let mut permitted: Vec<SocketAddr> = Vec::new();
            let mut refused = None;
            for addr in answers {
                match guard.check(addr.ip()) {
                    Ok(()) => permitted.push(addr),
                    Err(blocked) => refused = Some(blocked),
                }
            }
            match (permitted.is_empty(), refused) {
                (false, _) => Ok(Box::new(permitted.into_iter()) as Addrs),
                (true, Some(blocked)) => Err(blocked.into()),
                (true, None) => Err(DnsFailure {
                    host,
                    detail: "no addresses".to_owned(),
                }
                .into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(guard: &DestinationGuard, ip: &str) -> Option<BlockReason> {
        let ip: IpAddr = ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        guard.check(ip).err().map(|b| b.reason)
    }

    #[test]
    fn internal_addresses_are_refused() {
        let guard = DestinationGuard::default();
        let cases = [
            ("127.0.0.1", BlockReason::Loopback),
            ("127.8.9.10", BlockReason::Loopback),
            ("::1", BlockReason::Loopback),
            ("169.254.169.254", BlockReason::Metadata),
            ("fd00:ec2::254", BlockReason::Metadata),
            ("100.100.100.200", BlockReason::Metadata),
            ("169.254.1.1", BlockReason::LinkLocal),
            ("fe80::1", BlockReason::LinkLocal),
            ("10.0.0.1", BlockReason::Private),
            ("172.16.5.4", BlockReason::Private),
            ("192.168.1.1", BlockReason::Private),
            ("100.64.0.1", BlockReason::Private),
            ("fd12:3456::1", BlockReason::Private),
            ("::ffff:10.0.0.1", BlockReason::Private),
            ("::ffff:127.0.0.1", BlockReason::Loopback),
            ("64:ff9b::a9fe:a9fe", BlockReason::Metadata),
            ("0.0.0.0", BlockReason::NotRoutable),
            ("::", BlockReason::NotRoutable),
            ("224.0.0.1", BlockReason::NotRoutable),
            ("255.255.255.255", BlockReason::NotRoutable),
        ];
        for (ip, reason) in cases {
            assert_eq!(refused(&guard, ip), Some(reason), "{ip}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        let guard = DestinationGuard::default();
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "100.128.0.1",
            "172.32.0.1",
        ] {
            assert_eq!(refused(&guard, ip), None, "{ip}");
        }
    }

    #[test]
    fn allowed_cidrs_override_the_guard() {
        let allow = ["127.0.0.0/8", "10.0.0.0/24"]
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let guard = DestinationGuard::new(allow);
        assert_eq!(refused(&guard, "127.0.0.1"), None);
        assert_eq!(refused(&guard, "10.0.0.1"), None);
        assert_eq!(refused(&guard, "::ffff:10.0.0.9"), None);
        assert_eq!(refused(&guard, "10.0.1.1"), Some(BlockReason::Private));
        assert_eq!(
            refused(&guard, "169.254.169.254"),
            Some(BlockReason::Metadata)
        );
    }

    #[test]
    fn blocked_names_the_address_and_the_fix() {
        let guard = DestinationGuard::default();
        let err = guard.check(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("10.0.0.1 is a private address; add it to webhook.allow_cidrs to allow it".into())
        );
    }
}
