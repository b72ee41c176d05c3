//! Request signatures: our own timestamped `X-Pivot-Signature` (the Stripe/jambonz scheme) and a
//! Twilio-compatible `X-Twilio-Signature` so existing Twilio validators accept TwiML requests.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use url::Url;

use crate::encode::append_query;

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<payload>")>`; the payload is the POST body, or
/// the query string of a GET. The timestamp inside the MAC lets receivers refuse replays.
pub fn pivot_signature(secret: &[u8], unix_time: u64, payload: &[u8]) -> String {
    let tag = pivot_mac(secret, unix_time, payload)
        .finalize()
        .into_bytes();
    format!("t={unix_time},v1={}", hex(&tag))
}

/// Checks an `X-Pivot-Signature` header: well formed, timestamp within `tolerance_s` of `now`, and
/// one of its `v1` tags matching (several are allowed so a secret can be rotated), compared in
/// constant time.
pub fn verify_pivot_signature(
    secret: &[u8],
    header: &str,
    payload: &[u8],
    now: u64,
    tolerance_s: u64,
) -> bool {
    let mut timestamp = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        let Some((name, value)) = part.trim().split_once('=') else {
            return false;
        };
        match name {
            "t" if timestamp.is_none() => match value.parse::<u64>() {
                Ok(t) => timestamp = Some(t),
                Err(_) => return false,
            },
            "t" => return false,
            "v1" => match unhex(value) {
                Some(tag) => tags.push(tag),
                None => return false,
            },
            // Unknown schemes are skipped so a future `v2` can be sent alongside `v1`.
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    if now.abs_diff(timestamp) > tolerance_s {
        return false;
    }
    let mac = pivot_mac(secret, timestamp, payload);
    tags.iter().any(|tag| mac.clone().verify_slice(tag).is_ok())
}

/// Twilio's `X-Twilio-Signature`: Base64(HMAC-SHA1(auth token, url + name1 + value1 + …)) with
/// the form parameters sorted by name, then value. A GET passes its full URL and no parameters.
pub fn twilio_signature(auth_token: &[u8], url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = keyed::<Hmac<Sha1>>(auth_token);
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Twilio's scheme for JSON bodies: the URL gains `bodySHA256=<hex sha256(body)>`, and the
/// signature then covers that URL alone.
pub fn with_body_sha256(url: &Url, body: &[u8]) -> Url {
    let digest = Sha256::digest(body);
    append_query(url, &format!("bodySHA256={}", hex(&digest)))
}

fn pivot_mac(secret: &[u8], unix_time: u64, payload: &[u8]) -> Hmac<Sha256> {
    let mut mac = keyed::<Hmac<Sha256>>(secret);
    mac.update(unix_time.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

fn keyed<M: Mac + KeyInit>(key: &[u8]) -> M {
    // Invariant: HMAC accepts keys of any length (long ones are hashed first), so
    // `new_from_slice` never returns its error.
    #[allow(clippy::expect_used)]
    M::new_from_slice(key).expect("HMAC accepts keys of any length")
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0F)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16);
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| match *pair {
            [high, low] => u8::try_from(digit(high)? * 16 + digit(low)?).ok(),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn twilio_documentation_example() {
        let params = owned(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]);
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            twilio_signature(b"12345", url, &params),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        // Order of the input does not matter: the parameters are sorted.
        let mut reversed = params.clone();
        reversed.reverse();
        assert_eq!(
            twilio_signature(b"12345", url, &reversed),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }

    #[test]
    fn twilio_signature_matches_independent_computation() {
        let params = owned(&[
            ("To", "3004"),
            ("Digits[pin]", "99"),
            ("Digits[default]", "1 2"),
            ("arr[]", "b"),
            ("arr[]", "a"),
            ("CallSid", "c-1"),
        ]);
        let url = "https://app.example/ivr?step=2";
        let by_hand = "https://app.example/ivr?step=2\
                       CallSidc-1Digits[default]1 2Digits[pin]99To3004arr[]aarr[]b";
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(b"token").unwrap();
        mac.update(by_hand.as_bytes());
        let expected = STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(twilio_signature(b"token", url, &params), expected);
    }

    #[test]
    fn twilio_get_signs_the_url_alone() {
        let url = "https://app.example/ivr?CallSid=c-1&Digits=5";
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(b"token").unwrap();
        mac.update(url.as_bytes());
        let expected = STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(twilio_signature(b"token", url, &[]), expected);
    }

    #[test]
    fn body_sha256_is_appended_to_the_query() {
        let url = Url::parse("https://app.example/ivr?x=1#f").unwrap();
        // sha256("") and sha256("abc") are the FIPS 180-2 test vectors.
        assert_eq!(
            with_body_sha256(&url, b"").as_str(),
            "https://app.example/ivr?x=1\
             &bodySHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855#f"
        );
        let plain = Url::parse("https://app.example/ivr").unwrap();
        assert_eq!(
            with_body_sha256(&plain, b"abc").as_str(),
            "https://app.example/ivr\
             ?bodySHA256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    const SECRET: &[u8] = b"whsec_test";
    const BODY: &[u8] = br#"{"Call-ID":"abc"}"#;

    #[test]
    fn pivot_signature_known_answer() {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET).unwrap();
        mac.update(b"1700000000.{\"Call-ID\":\"abc\"}");
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let header = pivot_signature(SECRET, 1_700_000_000, BODY);
        assert_eq!(header, format!("t=1700000000,v1={expected}"));
        // Also computed with `openssl dgst -sha256 -hmac whsec_test`.
        assert_eq!(
            header,
            "t=1700000000,v1=5958c72eba85b72f4995a86a1ee6986e43d923bcc679ffc721ccbc60d960e927"
        );
    }

    #[test]
    fn verify_accepts_fresh_signatures_within_tolerance() {
        let header = pivot_signature(SECRET, 1_000, BODY);
        assert!(verify_pivot_signature(SECRET, &header, BODY, 1_000, 300));
        assert!(verify_pivot_signature(SECRET, &header, BODY, 1_300, 300));
        assert!(verify_pivot_signature(SECRET, &header, BODY, 700, 300));
        let spaced = header.replace(',', " , ");
        assert!(verify_pivot_signature(SECRET, &spaced, BODY, 1_000, 300));
    }

    #[test]
    fn verify_accepts_any_matching_v1_and_skips_unknown_schemes() {
        let good = pivot_signature(SECRET, 1_000, BODY);
        let tag = good.split_once(",v1=").unwrap().1;
        let other = pivot_signature(b"old secret", 1_000, BODY);
        let old_tag = other.split_once(",v1=").unwrap().1;
        let header = format!("t=1000,v1={old_tag},v2=zz,v1={tag}");
        assert!(verify_pivot_signature(SECRET, &header, BODY, 1_000, 0));
    }

    #[test]
    fn verify_rejects_tampering_wrong_secret_and_stale_timestamps() {
        let header = pivot_signature(SECRET, 1_000, BODY);
        assert!(!verify_pivot_signature(SECRET, &header, b"{}", 1_000, 300));
        assert!(!verify_pivot_signature(b"other", &header, BODY, 1_000, 300));
        assert!(!verify_pivot_signature(SECRET, &header, BODY, 1_301, 300));
        assert!(!verify_pivot_signature(SECRET, &header, BODY, 699, 300));
        // The timestamp is inside the MAC: moving it forward breaks the signature.
        let moved = header.replace("t=1000", "t=2000");
        assert!(!verify_pivot_signature(SECRET, &moved, BODY, 2_000, 300));
    }

    #[test]
    fn verify_rejects_malformed_headers() {
        let header = pivot_signature(SECRET, 1_000, BODY);
        let tag = header.split_once(",v1=").unwrap().1.to_owned();
        let malformed = [
            String::new(),
            "garbage".to_owned(),
            format!("v1={tag}"),
            "t=1000".to_owned(),
            format!("t=abc,v1={tag}"),
            format!("t=-5,v1={tag}"),
            format!("t=1000,t=1000,v1={tag}"),
            format!("t=1000,v1={}", &tag[1..]),
            format!("t=1000,v1={}", &tag[..62]),
            format!("t=1000,v1={}zz", &tag[..62]),
            format!("t=1000,v1=+{}", &tag[1..]),
            format!("t=1000,v1={tag},"),
            format!("t=1000;v1={tag}"),
        ];
        for bad in malformed {
            assert!(
                !verify_pivot_signature(SECRET, &bad, BODY, 1_000, 300),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(unhex("000fA5ff"), Some(vec![0x00, 0x0f, 0xa5, 0xff]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("é0"), None);
    }
}
