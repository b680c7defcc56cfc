//! Where an `auth.keystone` setting came from, for configuration errors that name the file
//! and line as the token file's errors do: the config file's line of the key, the line of
//! its `[auth.keystone]` table when the key is missing there, or "a flag or the environment"
//! when the value is not the file's.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

/// The parts of a config file this module reads (everything else is ignored).
#[derive(Deserialize)]
struct File {
    #[serde(default)]
    auth: Option<Auth>,
}

#[derive(Deserialize)]
struct Auth {
    #[serde(default)]
    keystone: Option<Spanned<HashMap<String, Spanned<toml::Value>>>>,
}

/// Where `auth.keystone.<key>` (now `value`) was set, as a phrase to append to a message:
/// ` (FILE line N)`, ` (not set in FILE, whose [auth.keystone] is at line N)`, ` (not set:
/// FILE has no [auth.keystone])`, ` (set by a flag or the environment)`, or `""` without a
/// config file and without a value.
pub(super) fn origin(file: Option<&Path>, key: &str, value: Option<&str>) -> String {
    let elsewhere = || match value {
        Some(_) => " (set by a flag or the environment)".to_owned(),
        None => String::new(),
    };
    let Some(path) = file else {
        return elsewhere();
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return elsewhere();
    };
    let Ok(parsed) = toml::from_str::<File>(&text) else {
        return elsewhere();
    };
    let line = |at: usize| text.get(..at).map_or(0, |s| s.matches('\n').count()) + 1;
    let shown = path.display();
    let Some(table) = parsed.auth.and_then(|a| a.keystone) else {
        return match value {
            Some(_) => elsewhere(),
            None => format!(" (not set: {shown} has no [auth.keystone])"),
        };
    };
    match table.get_ref().get(key) {
        Some(found) if value.is_none_or(|v| same(found.get_ref(), v)) => {
            format!(" ({shown} line {})", line(found.span().start))
        }
        Some(_) => elsewhere(),
        None if value.is_some() => elsewhere(),
        None => format!(
            " (not set in {shown}, whose [auth.keystone] is at line {})",
            line(table.span().start)
        ),
    }
}

/// Whether the file's `found` is the setting's `value` (as text).
fn same(found: &toml::Value, value: &str) -> bool {
    match found {
        toml::Value::String(s) => s == value,
        other => other.to_string() == value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_origin_names_the_line_or_the_table_or_a_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "workers = 2\n\n[auth]\nmode = \"keystone\"\n\n[auth.keystone]\nurl = \"ftp://x\"\n\
             cache_size = 0\n",
        )
        .unwrap();
        let shown = path.display().to_string();
        let at = origin(Some(&path), "url", Some("ftp://x"));
        assert_eq!(at, format!(" ({shown} line 7)"));
        assert_eq!(
            origin(Some(&path), "cache_size", Some("0")),
            format!(" ({shown} line 8)")
        );
        assert_eq!(
            origin(Some(&path), "username", None),
            format!(" (not set in {shown}, whose [auth.keystone] is at line 6)")
        );
        assert_eq!(
            origin(Some(&path), "url", Some("http://other")),
            " (set by a flag or the environment)"
        );
        assert_eq!(origin(None, "url", None), "");
        std::fs::write(&path, "[auth]\nmode = \"keystone\"\n").unwrap();
        assert_eq!(
            origin(Some(&path), "url", None),
            format!(" (not set: {shown} has no [auth.keystone])")
        );
    }
}
