//! The one way a source URL is shown (in errors, task messages and results, log lines):
//! without the credentials it may carry. A URL's user information (`https://user:pass@host/`)
//! becomes `***@`, every query value (`?X-Amz-Signature=…`, `?token=…`, `?sig=…`: presigned
//! and temporary URLs carry their secret there) becomes `***`, and a fragment becomes `#***`;
//! scheme, host, port, path and query names stay, so that a user can still tell which URL
//! and which of its parts a message means.
//!
//! It works on the text, not on a parsed URL, so that it also redacts what is not a valid
//! URL (a refusal quotes such text) and does not respell what it keeps.

/// `text` with its user information, query values and fragment replaced by `***`.
pub fn url(text: &str) -> String {
    let (rest, fragment) = match text.split_once('#') {
        Some((rest, _)) => (rest, Some("#***")),
        None => (text, None),
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    // The authority runs from after `//` (or the start) to the first `/` after it.
    let (scheme, after) = match before_query.split_once("//") {
        Some((scheme, after)) => (Some(scheme), after),
        None => (None, before_query),
    };
    let (authority, path) = after
        .find(['/', '\\'])
        .map_or((after, ""), |at| after.split_at(at));
    let mut out = String::with_capacity(text.len());
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("//");
    }
    match authority.rsplit_once('@') {
        Some((_, host)) => {
            out.push_str("***@");
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    out.push_str(path);
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, "")) => format!("{name}="),
                Some((name, _)) => format!("{name}=***"),
                None if pair.is_empty() => String::new(),
                None => "***".to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push_str(fragment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_url_redacts_user_info_query_values_and_fragment() {
        for (given, shown) in [
            ("https://example.org/a.qcow2", "https://example.org/a.qcow2"),
            (
                "https://user:s3cret@example.org:8443/a.qcow2",
                "https://***@example.org:8443/a.qcow2",
            ),
            ("http://token@10.0.0.1/x", "http://***@10.0.0.1/x"),
            (
                "https://b.s3.example/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abc&x=",
                "https://b.s3.example/k?X-Amz-Credential=***&X-Amz-Signature=***&x=",
            ),
            ("http://h/p?s3cret", "http://h/p?***"),
            ("http://h/p#access_token=s3cret", "http://h/p#***"),
            // Not URLs, still redacted.
            ("user:s3cret@host/x", "***@host/x"),
            (
                "ht tp://u:s3cret@h/x?token=s3cret",
                "ht tp://***@h/x?token=***",
            ),
            // An `@` in the path is not user information.
            ("http://h/a@b", "http://h/a@b"),
            ("http://u:p@h\\@x", "http://***@h\\@x"),
        ] {
            assert_eq!(url(given), shown, "{given}");
            assert!(!url(given).contains("s3cret"), "{given}");
        }
    }
}
