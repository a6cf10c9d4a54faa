//! The address policy. A URL's host is checked as written (an IP literal
//! never reaches a resolver), a name on every address it resolves to, and
//! every redirect again. Hosts in the allow list (exact, or `*.suffix`)
//! pass as they are: the operator's own services.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a request may not go out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The host is, or resolves to, an address in a refused range.
    #[error(
        "address not allowed: {host} is {addr} ({range}); allow the host with [http] allow_hosts or WEIR_HTTP_ALLOW_HOSTS"
    )]
    Address {
        /// The host as written in the URL.
        host: String,
        /// The address it is or resolved to.
        addr: IpAddr,
        /// The range that refuses it.
        range: &'static str,
    },
    /// Not `http` or `https`.
    #[error("scheme `{0}` is not allowed: only http and https")]
    Scheme(String),
    /// A URL without a host.
    #[error("the URL has no host")]
    NoHost,
}

/// The refused range an address falls in, if any.
pub fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "this network"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([10, 0, 0, 0], 8, "private"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 168, 0, 0], 16, "private"),
        ([100, 64, 0, 0], 10, "shared address space (CGNAT)"),
        ([169, 254, 0, 0], 16, "link-local (cloud metadata)"),
        ([192, 0, 0, 0], 24, "special purpose"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    RANGES
        .iter()
        .find(|(net, bits, _)| in_v4(ip, *net, *bits))
        .map(|(_, _, name)| *name)
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // IPv4 inside IPv6: judge the IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return refused_v4(v4);
    }
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return refused_v4(v4);
    }
    match s[0] {
        x if x & 0xffc0 == 0xfe80 => Some("link-local"),
        x if x & 0xfe00 == 0xfc00 => Some("unique local (cloud metadata)"),
        x if x & 0xff00 == 0xff00 => Some("multicast"),
        0x2001 if s[1] == 0x0db8 => Some("documentation"),
        _ => None,
    }
}

/// The policy: which hosts pass as they are.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<String>,
}

impl Guard {
    /// A guard that lets `allow_hosts` through (exact hosts, or `*.suffix`).
    pub fn new(allow_hosts: &[String]) -> Self {
        Guard {
            allow: allow_hosts
                .iter()
                .map(|h| {
                    h.trim()
                        .trim_matches(|c| c == '[' || c == ']')
                        .to_ascii_lowercase()
                })
                .filter(|h| !h.is_empty())
                .collect(),
        }
    }

    /// Is `host` (as written in a URL, brackets off) on the allow list?
    pub fn allows(&self, host: &str) -> bool {
        let host = host
            .trim_matches(|c| c == '[' || c == ']')
            .to_ascii_lowercase();
        self.allow.iter().any(|a| match a.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => *a == host,
        })
    }

    /// Checks a URL before a request (or a redirect) is sent: its scheme,
    /// and its host when that is an IP literal. A name is checked when it
    /// resolves ([`Guard::check_resolved`]).
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme(url.scheme().to_owned()));
        }
        let host = url.host().ok_or(Refusal::NoHost)?;
        let text = host.to_string();
        if self.allows(&text) {
            return Ok(());
        }
        let ip = match host {
            url::Host::Ipv4(v4) => IpAddr::V4(v4),
            url::Host::Ipv6(v6) => IpAddr::V6(v6),
            url::Host::Domain(_) => return Ok(()),
        };
        check_addr(&text, ip)
    }

    /// Checks every address `host` resolved to: one refused address
    /// refuses the host (a name must not answer public now and private on
    /// the next lookup).
    pub fn check_resolved(&self, host: &str, addrs: &[IpAddr]) -> Result<(), Refusal> {
        if self.allows(host) {
            return Ok(());
        }
        addrs.iter().try_for_each(|ip| check_addr(host, *ip))
    }
}

fn check_addr(host: &str, ip: IpAddr) -> Result<(), Refusal> {
    match refused_range(ip) {
        Some(range) => Err(Refusal::Address {
            host: host.to_owned(),
            addr: ip,
            range,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refused_range_and_some_public_addresses() {
        let refused = [
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.100.100.200",
            "169.254.169.254",
            "192.0.0.8",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ];
        for a in refused {
            let ip: IpAddr = a.parse().expect(a);
            assert!(refused_range(ip).is_some(), "{a} must be refused");
        }
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            let ip: IpAddr = a.parse().expect(a);
            assert_eq!(refused_range(ip), None, "{a} is public");
        }
    }

    #[test]
    fn literal_hosts_in_any_spelling_are_checked_and_allowed_hosts_pass() {
        let guard = Guard::new(&[]);
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://017700000001/",
            "http://127.1/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            let parsed = url::Url::parse(url).expect(url);
            let refusal = guard.check_url(&parsed).expect_err(url);
            assert!(refusal.to_string().contains("not allowed"), "{refusal}");
        }
        assert!(matches!(
            guard.check_url(&url::Url::parse("file:///etc/passwd").expect("url")),
            Err(Refusal::Scheme(_))
        ));
        assert!(
            guard
                .check_url(&url::Url::parse("https://example.com/").expect("url"))
                .is_ok()
        );
        let allowing = Guard::new(&["127.0.0.1".into(), "*.internal.example".into()]);
        assert!(
            allowing
                .check_url(&url::Url::parse("http://127.0.0.1:9000/x").expect("url"))
                .is_ok()
        );
        let private: IpAddr = "10.0.0.5".parse().expect("ip");
        assert!(
            allowing
                .check_resolved("api.internal.example", &[private])
                .is_ok()
        );
        assert!(
            allowing
                .check_resolved("internal.example.com", &[private])
                .is_err()
        );
        let public: IpAddr = "8.8.8.8".parse().expect("ip");
        assert!(
            guard
                .check_resolved("rebind.example", &[public, private])
                .is_err(),
            "one private answer refuses the name"
        );
    }
}
