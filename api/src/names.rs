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
    use super::*;

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
