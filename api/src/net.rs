//! Network values the API carries, as types rather than strings: an overlay [`Subnet`] and a
//! policy [`Protocol`]. Both travel as their usual text (`10.255.7.0/24`, `tcp`).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 subnet such as `10.255.7.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

/// Why a subnet string is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid subnet {input:?}: {reason}")]
pub struct SubnetError {
    input: String,
    reason: &'static str,
}

impl Subnet {
    /// A subnet from its network address and prefix length (host bits must be zero).
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, SubnetError> {
        let s = Self { network, prefix };
        let err = |reason| SubnetError {
            input: format!("{network}/{prefix}"),
            reason,
        };
        if prefix > 30 {
            return Err(err("prefix must be /30 or shorter to hold any container"));
        }
        if u32::from(network) & !s.mask() != 0 {
            return Err(err("host bits are set; give the network address"));
        }
        Ok(s)
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    /// The network address. The cell's VTEP uses it as the cell's own overlay address, as
    /// silk does, so it is never handed to a container.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// True if `ip` lies in the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// Addresses containers may get: all but the network and broadcast addresses.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.network) + 1..u32::from(self.broadcast())).map(Ipv4Addr::from)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = SubnetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| SubnetError {
            input: s.to_string(),
            reason,
        };
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| err("expected ADDRESS/PREFIX"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| err("not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| err("prefix is not a number 0-32"))?;
        if prefix > 32 {
            return Err(err("prefix is not a number 0-32"));
        }
        Self::new(ip, prefix).map_err(|e| SubnetError {
            input: s.to_string(),
            reason: e.reason,
        })
    }
}

impl Serialize for Subnet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A policy's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(format!("invalid protocol {s:?}: use tcp or udp")),
        }
    }
}

/// A port or range of ports, `start` to `end` inclusive, with 1 <= start <= end: valid by
/// construction, also when it arrives in JSON (as `"start"` and `"end"` beside the other
/// fields of a policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    /// The range `start`-`end`, if 1 <= start <= end.
    pub fn new(start: u16, end: u16) -> Result<Self, String> {
        if start == 0 || start > end {
            return Err(format!(
                "invalid port range {start}-{end}: use ports 1-65535, the first not above the last"
            ));
        }
        Ok(PortRange { start, end })
    }

    /// One port.
    pub fn single(port: u16) -> Result<Self, String> {
        Self::new(port, port)
    }

    /// The first port.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// The last port.
    pub fn end(&self) -> u16 {
        self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// `8080` or `8080-8090`, as the cf CLI's `--port` takes it.
impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid port {s:?}: use a port (8080) or a range (8080-8090) within 1-65535")
        };
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let a: u16 = a.trim().parse().map_err(|_| bad())?;
        let b: u16 = b.trim().parse().map_err(|_| bad())?;
        PortRange::new(a, b).map_err(|_| bad())
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            start: u16,
            end: u16,
        }
        let r = Raw::deserialize(d)?;
        PortRange::new(r.start, r.end).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_and_protocols_travel_as_text_and_refuse_nonsense() {
        let s: Subnet = "10.255.7.0/24".parse().unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"10.255.7.0/24\"");
        assert_eq!(
            serde_json::from_str::<Subnet>("\"10.255.7.0/24\"").unwrap(),
            s
        );
        for bad in ["\"10.255.7.1/24\"", "\"10.255.7.0\"", "\"x/24\"", "24"] {
            assert!(serde_json::from_str::<Subnet>(bad).is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&Protocol::Udp).unwrap(), "\"udp\"");
        assert_eq!("tcp".parse::<Protocol>().unwrap(), Protocol::Tcp);
        assert!("icmp".parse::<Protocol>().is_err());
        assert!(serde_json::from_str::<Protocol>("\"TCP\"").is_err());
        let r: PortRange = "8080-8090".parse().unwrap();
        assert_eq!(
            (r.start(), r.end(), r.to_string()),
            (8080, 8090, "8080-8090".into())
        );
        assert_eq!("53".parse::<PortRange>().unwrap().to_string(), "53");
        for bad in ["0", "9-8", "70000", "a", "1-", ""] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<PortRange>(r#"{"start":9,"end":8}"#).is_err());
        assert_eq!(
            serde_json::to_string(&PortRange::single(80).unwrap()).unwrap(),
            r#"{"start":80,"end":80}"#
        );
    }
}
