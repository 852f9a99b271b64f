//! The names the API accepts for apps and cells: one rule each, for control (which stores
//! them) and every client (which builds paths and command lines from them).

/// App names: 1-63 letters, digits, `-` or `_`, starting with a letter or digit (the CNI
/// plugin's container ids start with one, and `.`/`..` can never name an app).
pub fn validate_app_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid app name {name:?}: use 1-63 letters, digits, '-' or '_', starting with a letter or digit"
        ))
    }
}

/// The host of an internal route: one DNS label (letters, digits and `-`, 1-63, no `-` at
/// either end), as CF's internal routes have, and never all digits. Route names and the
/// platform's own names share one namespace: `<index>.<host>.<domain>` names one instance, so
/// a host with a dot (`0.appc`) or of digits alone would let one app take another's instance
/// name (and have it certified). Answers the host lower-cased.
pub fn validate_route_host(host: &str) -> Result<String, String> {
    let label = (1..=63).contains(&host.len())
        && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !host.starts_with('-')
        && !host.ends_with('-');
    if !label {
        return Err(format!(
            "Host {host:?} is invalid: the host of an internal route is one DNS label: 1-63 letters, digits or '-', not starting or ending with '-' (\"<index>.<host>\" names one instance of the app)"
        ));
    }
    if host.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "Host {host:?} is invalid: a host of digits alone would name an instance (\"<index>.<host>\")"
        ));
    }
    Ok(host.to_ascii_lowercase())
}

/// The hostname of an app's default internal route, as CF derives one from an app name: lower
/// case, `_` and other characters a DNS label cannot hold become `-`, no `-` at either end;
/// none for a name of digits alone (it would name an instance, see [`validate_route_host`]).
pub fn default_hostname(app: &str) -> Option<String> {
    let host: String = app
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    validate_route_host(host.trim_matches('-')).ok()
}

/// Cell names: a DNS label (lower-case letters, digits, `-`), so a name is safe in a path, a
/// certificate and a log line.
pub fn validate_cell_name(name: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid cell name {name:?}: use 1-63 lower-case letters, digits or '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_hostnames_are_dns_labels() {
        for (app, host) in [
            ("appB", Some("appb")),
            ("my_app", Some("my-app")),
            ("_x_", Some("x")),
            ("a--b", Some("a--b")),
            ("___", None),
            ("0", None),
            ("42", None),
            ("4-2", Some("4-2")),
        ] {
            assert_eq!(super::default_hostname(app).as_deref(), host, "{app}");
        }
    }

    use super::*;

    #[test]
    fn a_route_host_can_never_be_an_instance_name() {
        // `<index>.<host>` is an instance's name: a dotted host or one of digits alone could
        // be another app's instance (issue #23: `0.appc` on the attacker's app).
        for bad in [
            "0.appc", "0", "17", "a.b", "", "-a", "a-", "a_b", "a b", "*", "é",
        ] {
            assert!(validate_route_host(bad).is_err(), "{bad:?}");
        }
        assert!(validate_route_host(&"a".repeat(64)).is_err());
        assert_eq!(validate_route_host("AppB-2").unwrap(), "appb-2");
        assert_eq!(validate_route_host("0appc").unwrap(), "0appc");
        assert!(validate_route_host("0.appc")
            .unwrap_err()
            .contains("one DNS label"));
        assert!(validate_route_host("0")
            .unwrap_err()
            .contains("digits alone"));
    }

    #[test]
    fn names_that_could_leave_a_path_are_refused() {
        for bad in ["", ".", "..", "../x", "a/b", "_x", "-x", "a b"] {
            assert!(validate_app_name(bad).is_err(), "{bad:?}");
            assert!(validate_cell_name(bad).is_err(), "{bad:?}");
        }
        validate_app_name("appA_1-x").unwrap();
        validate_cell_name("cell-1").unwrap();
        assert!(validate_cell_name("Cell1").is_err());
    }
}

/// Implements the string-like traits of a name newtype: it reads as a `str` everywhere, and
/// only its constructor decides what it may hold.
macro_rules! string_newtype {
    ($t:ident) => {
        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl std::borrow::Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
        impl $t {
            /// The name as a `&str`.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

/// A cell's name: valid by construction (see [`validate_cell_name`]), also when it arrives in
/// JSON.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct CellName(String);
string_newtype!(CellName);

impl CellName {
    /// `name`, if it is a valid cell name.
    pub fn new(name: &str) -> Result<Self, String> {
        validate_cell_name(name).map(|()| CellName(name.to_string()))
    }
}

impl std::str::FromStr for CellName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        CellName::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for CellName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CellName::new(&s).map_err(serde::de::Error::custom)
    }
}

/// An app's GUID, as control made it. A distinct type so an app GUID is never taken for an
/// app name, an instance GUID or a cell name; any text parses (Cloud Foundry's clients send
/// GUIDs control answers unknown ones for, with CF's messages).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct AppGuid(String);
string_newtype!(AppGuid);

impl From<String> for AppGuid {
    fn from(s: String) -> Self {
        AppGuid(s)
    }
}

impl From<&str> for AppGuid {
    fn from(s: &str) -> Self {
        AppGuid(s.to_string())
    }
}

impl std::str::FromStr for AppGuid {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(AppGuid(s.to_string()))
    }
}

#[cfg(test)]
mod newtype_tests {
    use super::*;

    #[test]
    fn a_cell_name_is_valid_however_it_arrives() {
        assert!(serde_json::from_str::<CellName>("\"cell-1\"").is_ok());
        for bad in ["\"../x\"", "\"Cell1\"", "\"\""] {
            assert!(serde_json::from_str::<CellName>(bad).is_err(), "{bad}");
        }
        assert!("a/b".parse::<CellName>().is_err());
        let g: AppGuid = "52e1395b".into();
        assert_eq!(serde_json::to_string(&g).unwrap(), "\"52e1395b\"");
        assert_eq!(g, "52e1395b");
    }
}
