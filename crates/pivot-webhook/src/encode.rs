//! How parameters travel: KAZOO's query-string encoding, JSON bodies, and request URLs.

use std::borrow::Cow;

use url::Url;

use crate::params::{ParamValue, Params};

/// KAZOO's `kz_http_util:json_to_querystring`: `k=v` joined by `&`, maps as `key[sub]=v`, lists
/// as `key[]=v`, values in the legacy form encoding (space → `+`).
///
/// Two deliberate differences, invisible for the keys KAZOO itself sends: key characters outside
/// `A-Z a-z 0-9 . - ~ _` are percent-encoded (KAZOO sends keys raw, so a user variable named
/// `a&From` could inject a parameter), and an empty map produces nothing rather than an empty
/// `&&` segment.
pub fn query_string(params: &Params) -> String {
    // Written straight into one buffer, names as a growing prefix: this runs for every pivot
    // request, and flattening into owned pairs first cost an allocation per name and value.
    let mut out = String::with_capacity(512);
    let mut name = String::with_capacity(64);
    for (key, value) in params.iter() {
        name.clear();
        push_form_encoded(&mut name, key);
        write_value(&mut out, &mut name, value);
    }
    out
}

/// Appends `name=value` pairs for `value` under `name` (restored before returning).
fn write_value(out: &mut String, name: &mut String, value: &ParamValue) {
    let pair = |out: &mut String, name: &str, value: &str| {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        push_form_encoded(out, value);
    };
    match value {
        ParamValue::Text(text) => pair(out, name, text),
        ParamValue::Bool(flag) => pair(out, name, if *flag { "true" } else { "false" }),
        ParamValue::Int(number) => {
            // Digits and `-` are never encoded, so the number can be formatted in place.
            use std::fmt::Write as _;
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(name);
            out.push('=');
            let _ = write!(out, "{number}");
        }
        ParamValue::List(items) => {
            let len = name.len();
            name.push_str("[]");
            for item in items {
                write_value(out, name, item);
            }
            name.truncate(len);
        }
        ParamValue::Map(map) => {
            let len = name.len();
            for (sub, item) in map.iter() {
                name.truncate(len);
                name.push('[');
                push_form_encoded(name, sub);
                name.push(']');
                write_value(out, name, item);
            }
            name.truncate(len);
        }
    }
}

/// The names and values [`query_string`] sends, before encoding (`Digits[default]`, `arr[]`):
/// what a Twilio signature covers.
pub fn pairs(params: &Params) -> Vec<(String, String)> {
    flatten(params, Cow::Borrowed)
}

/// The parameters as one JSON object in insertion order; maps and lists stay nested.
pub fn json_body(params: &Params) -> Vec<u8> {
    // Cannot fail: every key is a string and there are no floats. Falling back to an empty
    // object keeps this infallible without a panic path.
    serde_json::to_vec(params).unwrap_or_else(|_| b"{}".to_vec())
}

/// The GET URL: `query` after the document URL's own query (joined by `&`), fragment kept.
pub fn append_query(url: &Url, query: &str) -> Url {
    let mut out = url.clone();
    if query.is_empty() {
        return out;
    }
    match url.query() {
        Some(existing) if !existing.is_empty() => {
            out.set_query(Some(&format!("{existing}&{query}")));
        }
        _ => out.set_query(Some(query)),
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("empty URL")]
    Empty,
    #[error("invalid URL {reference:?}: {source}")]
    Invalid {
        reference: String,
        source: url::ParseError,
    },
    #[error("URL scheme {0:?} is not http or https")]
    Scheme(String),
}

/// Resolves an app-supplied URL against the document's URL per RFC 3986 (KAZOO's own algorithm
/// ignored leading `/` and treated `example.com` as a file name; apps expect the browser rules).
pub fn resolve(base: &Url, reference: &str) -> Result<Url, ResolveError> {
    let reference = reference.trim();
    if reference.is_empty() {
        return Err(ResolveError::Empty);
    }
    let url = base
        .join(reference)
        .map_err(|source| ResolveError::Invalid {
            reference: reference.to_owned(),
            source,
        })?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(ResolveError::Scheme(other.to_owned())),
    }
}

/// Flattens nested values into `(name, value)` pairs, passing each key segment (never the
/// brackets) through `key`.
fn flatten<'a>(params: &'a Params, key: fn(&'a str) -> Cow<'a, str>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in params.iter() {
        push_value(key(name).into_owned(), value, key, &mut out);
    }
    out
}

fn push_value<'a>(
    name: String,
    value: &'a ParamValue,
    key: fn(&'a str) -> Cow<'a, str>,
    out: &mut Vec<(String, String)>,
) {
    match value {
        ParamValue::Text(text) => out.push((name, text.clone())),
        ParamValue::Bool(flag) => out.push((name, flag.to_string())),
        ParamValue::Int(number) => out.push((name, number.to_string())),
        ParamValue::List(items) => {
            for item in items {
                push_value(format!("{name}[]"), item, key, out);
            }
        }
        ParamValue::Map(map) => {
            for (sub, item) in map.iter() {
                push_value(format!("{name}[{}]", key(sub)), item, key, out);
            }
        }
    }
}

/// KAZOO's `urlencode_plus`: unreserved bytes kept, space as `+`, every other byte `%XX`.
#[cfg(test)]
fn form_encode(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    push_form_encoded(&mut out, text);
    Cow::Owned(out)
}

/// Appends `text` in KAZOO's `urlencode_plus` form: unreserved bytes kept, space as `+`, every
/// other byte `%XX`. Runs of unreserved bytes are copied at once (most values are all of it).
fn push_form_encoded(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let kept = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'~' | b'_');
    let bytes = text.as_bytes();
    let mut run = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        if kept(byte) {
            continue;
        }
        // A run of kept bytes is ASCII, so its ends are character boundaries.
        out.push_str(text.get(run..at).unwrap_or_default());
        run = at + 1;
        if byte == b' ' {
            out.push('+');
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0F)]));
        }
    }
    out.push_str(text.get(run..).unwrap_or_default());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params(json: &str) -> Params {
        fn convert(value: serde_json::Value) -> ParamValue {
            match value {
                serde_json::Value::String(s) => s.into(),
                serde_json::Value::Bool(b) => b.into(),
                serde_json::Value::Number(n) => n.as_i64().unwrap().into(),
                serde_json::Value::Array(items) => {
                    ParamValue::List(items.into_iter().map(convert).collect())
                }
                serde_json::Value::Object(map) => {
                    ParamValue::Map(map.into_iter().map(|(k, v)| (k, convert(v))).collect())
                }
                serde_json::Value::Null => panic!("no null parameters"),
            }
        }
        // Insertion order matters, and serde_json's map (without preserve_order) sorts keys, so
        // the vectors are written with keys that sort in the order KAZOO's tests expect, or as
        // single-key objects.
        match convert(serde_json::from_str(json).unwrap()) {
            ParamValue::Map(map) => map,
            other => panic!("not an object: {other:?}"),
        }
    }

    fn ordered(pairs: &[(&str, ParamValue)]) -> Params {
        pairs.iter().cloned().collect()
    }

    #[test]
    fn kazoo_vectors() {
        assert_eq!(query_string(&params("{}")), "");
        assert_eq!(
            query_string(&ordered(&[("foo", "bar".into()), ("fizz", "buzz".into())])),
            "foo=bar&fizz=buzz"
        );
        assert_eq!(
            query_string(&params(r#"{"arr":[1,3,5]}"#)),
            "arr[]=1&arr[]=3&arr[]=5"
        );
        assert_eq!(
            query_string(&params(r#"{"url":"http://user:pass@host:port/"}"#)),
            "url=http%3A%2F%2Fuser%3Apass%40host%3Aport%2F"
        );
        assert_eq!(
            query_string(&params(
                r#"{"topkey":{"subkey1":"v1","subkey3":["v31","v32"]}}"#
            )),
            "topkey[subkey1]=v1&topkey[subkey3][]=v31&topkey[subkey3][]=v32"
        );
        assert_eq!(
            query_string(&params(r#"{"topkey":{"subkey2":{"k3":"v3"}}}"#)),
            "topkey[subkey2][k3]=v3"
        );
        assert_eq!(query_string(&params(r#"{"k":"foo bar"}"#)), "k=foo+bar");
        assert_eq!(query_string(&params(r#"{"k":"foo\n"}"#)), "k=foo%0A");
    }

    #[test]
    fn value_encoding() {
        assert_eq!(form_encode("AZaz09.-~_"), "AZaz09.-~_");
        assert_eq!(form_encode("a+b&c=d%"), "a%2Bb%26c%3Dd%25");
        assert_eq!(form_encode("é€"), "%C3%A9%E2%82%AC");
        assert_eq!(form_encode("[x]"), "%5Bx%5D");
        assert_eq!(
            query_string(&ordered(&[
                ("t", true.into()),
                ("f", false.into()),
                ("n", (-12_i64).into()),
            ])),
            "t=true&f=false&n=-12"
        );
    }

    #[test]
    fn hostile_keys_cannot_inject_parameters() {
        let mut inner = Params::new();
        inner.set("x]&y[", "1");
        let p = ordered(&[
            ("a&From=evil", "v".into()),
            ("sp ace", "v".into()),
            ("m", ParamValue::Map(inner)),
        ]);
        assert_eq!(
            query_string(&p),
            "a%26From%3Devil=v&sp+ace=v&m[x%5D%26y%5B]=1"
        );
        // Signatures cover what the receiver decodes, so pairs() keeps keys raw.
        assert_eq!(pairs(&p)[0].0, "a&From=evil");
        assert_eq!(pairs(&p)[2].0, "m[x]&y[]");
    }

    #[test]
    fn empty_map_and_list_produce_nothing() {
        let p = ordered(&[
            ("a", "1".into()),
            ("e", ParamValue::Map(Params::new())),
            ("l", ParamValue::List(Vec::new())),
            ("b", "2".into()),
        ]);
        assert_eq!(query_string(&p), "a=1&b=2");
    }

    #[test]
    fn pairs_are_flat_and_unencoded() {
        let p = params(r##"{"Digits":{"default":"1 2","pin":"#9"},"arr":[1,[true]]}"##);
        assert_eq!(
            pairs(&p),
            [
                ("Digits[default]".to_owned(), "1 2".to_owned()),
                ("Digits[pin]".to_owned(), "#9".to_owned()),
                ("arr[]".to_owned(), "1".to_owned()),
                ("arr[][]".to_owned(), "true".to_owned()),
            ]
        );
    }

    #[test]
    fn json_body_keeps_order_and_nesting() {
        let mut digits = Params::new();
        digits.set("default", "12");
        let p = ordered(&[
            ("To", "3004".into()),
            ("Digits", ParamValue::Map(digits)),
            ("Arr", ParamValue::List(vec![1_i64.into(), true.into()])),
            ("Call-ID", "a\"b".into()),
        ]);
        assert_eq!(
            String::from_utf8(json_body(&p)).unwrap(),
            r#"{"To":"3004","Digits":{"default":"12"},"Arr":[1,true],"Call-ID":"a\"b"}"#
        );
        assert_eq!(json_body(&Params::new()), b"{}");
    }

    #[test]
    fn append_query_to_plain_url() {
        let url = Url::parse("http://pivot.example/app.php").unwrap();
        assert_eq!(
            append_query(&url, "a=1").as_str(),
            "http://pivot.example/app.php?a=1"
        );
    }

    #[test]
    fn append_query_keeps_existing_query_and_fragment() {
        let url = Url::parse("http://pivot.example/app?a=1#frag").unwrap();
        assert_eq!(
            append_query(&url, "x=y").as_str(),
            "http://pivot.example/app?a=1&x=y#frag"
        );
        let bare = Url::parse("http://pivot.example/app?#frag").unwrap();
        assert_eq!(
            append_query(&bare, "x=y").as_str(),
            "http://pivot.example/app?x=y#frag"
        );
    }

    #[test]
    fn append_query_leaves_encoded_characters_alone() {
        let url = Url::parse("https://pivot.example/app").unwrap();
        let query = "Digits[default]=1+2&u=http%3A%2F%2Fh%2F&k[]=%7B";
        let out = append_query(&url, query);
        assert_eq!(out.query(), Some(query));
        assert_eq!(
            out.as_str(),
            "https://pivot.example/app?Digits[default]=1+2&u=http%3A%2F%2Fh%2F&k[]=%7B"
        );
    }

    #[test]
    fn append_empty_query_is_identity() {
        let url = Url::parse("http://pivot.example/app?a=1#f").unwrap();
        assert_eq!(append_query(&url, ""), url);
    }

    fn resolved(base: &str, reference: &str) -> String {
        resolve(&Url::parse(base).unwrap(), reference)
            .unwrap()
            .to_string()
    }

    #[test]
    fn resolves_per_rfc_3986() {
        let cases = [
            (
                "http://pivot/script.php",
                "script2.php",
                "http://pivot/script2.php",
            ),
            (
                "http://pivot/script.php",
                "/script2.php",
                "http://pivot/script2.php",
            ),
            (
                "http://host/d1/d2/d3/file.ext",
                "../.././a",
                "http://host/d1/a",
            ),
            (
                "http://host/a/b/main.php",
                "/root.php",
                "http://host/root.php",
            ),
            ("http://host/app/ivr", "next", "http://host/app/next"),
            (
                "http://example.com",
                "next.php",
                "http://example.com/next.php",
            ),
            (
                "http://example.com/",
                "next.php",
                "http://example.com/next.php",
            ),
            (
                "http://host/a/b.php",
                "https://other/x?y=1",
                "https://other/x?y=1",
            ),
            (
                "http://host/a/b.php?old=1",
                "?x=1",
                "http://host/a/b.php?x=1",
            ),
            ("https://host/a/b.php", "//cdn/c.php", "https://cdn/c.php"),
            (
                "http://host/a/b.php",
                "  next.php\n",
                "http://host/a/next.php",
            ),
        ];
        for (base, reference, expected) in cases {
            assert_eq!(resolved(base, reference), expected, "{base} + {reference}");
        }
    }

    #[test]
    fn resolve_refuses_other_schemes_and_empty_references() {
        let base = Url::parse("http://host/a").unwrap();
        assert_eq!(
            resolve(&base, "ftp://x"),
            Err(ResolveError::Scheme("ftp".into()))
        );
        assert_eq!(
            resolve(&base, "file:///etc/passwd"),
            Err(ResolveError::Scheme("file".into()))
        );
        assert_eq!(resolve(&base, ""), Err(ResolveError::Empty));
        assert_eq!(resolve(&base, "  \t"), Err(ResolveError::Empty));
        assert!(matches!(
            resolve(&base, "http://[bad"),
            Err(ResolveError::Invalid { .. })
        ));
        assert!(
            ResolveError::Scheme("ftp".into())
                .to_string()
                .contains("\"ftp\"")
        );
    }
}
