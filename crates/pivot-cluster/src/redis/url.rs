//! The Redis URLs pivot accepts.
//!
//! - `redis://[[username]:password@]host[:port][/db]` and `rediss://…` (TLS): one Redis server,
//!   parsed by the redis crate (its query options such as `?protocol=resp3` apply).
//! - `redis+sentinel://[[username]:password@]host[:port][,host[:port]…]/master-name[/db]`
//!   `[?sentinel_username=…&sentinel_password=…]`: the master that the listed Sentinels
//!   (port 26379 when omitted; IPv6 hosts in brackets) currently name. The credentials before
//!   `@` and the db are the master's; the Sentinels' own credentials, if they require any, go in
//!   the query. Every part is percent-decoded.

use percent_encoding::percent_decode_str;

pub(crate) const SENTINEL_SCHEME: &str = "redis+sentinel://";
const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// A parsed `redis+sentinel://` URL.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SentinelUrl {
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
}

impl std::fmt::Debug for SentinelUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Passwords end up in logs through Debug; never print them.
        f.debug_struct("SentinelUrl")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

fn decode(what: &str, text: &str) -> Result<String, String> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| format!("{what} is not UTF-8 once percent-decoded"))
}

pub(crate) fn parse_sentinel(url: &str) -> Result<SentinelUrl, String> {
    let rest = url
        .strip_prefix(SENTINEL_SCHEME)
        .ok_or_else(|| format!("expected {SENTINEL_SCHEME}"))?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    // A password may contain '@' only percent-encoded, but be lenient: the hosts follow the last.
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => match userinfo.split_once(':') {
            Some((user, password)) => (
                Some(user).filter(|u| !u.is_empty()),
                Some(decode("password", password)?),
            ),
            None => (None, Some(decode("password", userinfo)?)),
        },
    };
    let username = username.map(|u| decode("username", u)).transpose()?;
    let sentinels = hosts
        .split(',')
        .map(parse_host)
        .collect::<Result<Vec<_>, _>>()?;
    let mut segments = path.split('/');
    let master = decode("master name", segments.next().unwrap_or_default())?;
    if master.is_empty() {
        return Err("the master name is missing (…/<master-name>[/<db>])".to_owned());
    }
    let db = match segments.next() {
        None | Some("") => 0,
        Some(db) => db
            .parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| format!("db {db:?} is not a non-negative integer"))?,
    };
    if segments.next().is_some() {
        return Err("unexpected path after /<master-name>/<db>".to_owned());
    }
    let mut sentinel_username = None;
    let mut sentinel_password = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "sentinel_username" => sentinel_username = Some(decode(name, value)?),
            "sentinel_password" => sentinel_password = Some(decode(name, value)?),
            other => return Err(format!("unknown query parameter {other:?}")),
        }
    }
    Ok(SentinelUrl {
        sentinels,
        master,
        db,
        username,
        password,
        sentinel_username,
        sentinel_password,
    })
}

fn parse_host(host: &str) -> Result<(String, u16), String> {
    let port = |text: &str| {
        text.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("sentinel port {text:?} is not a port"))
    };
    if let Some(bracketed) = host.strip_prefix('[') {
        let (address, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("sentinel host {host:?}: unclosed '['"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => port(p)?,
            None if after.is_empty() => DEFAULT_SENTINEL_PORT,
            None => return Err(format!("sentinel host {host:?}: junk after ']'")),
        };
        return Ok((address.to_owned(), port));
    }
    let (name, port) = match host.split_once(':') {
        Some((name, p)) => (name, port(p)?),
        None => (host, DEFAULT_SENTINEL_PORT),
    };
    if name.is_empty() {
        return Err("a sentinel host is empty".to_owned());
    }
    Ok((name.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_forms_parse() {
        let url = parse_sentinel("redis+sentinel://127.0.0.1:26380/mymaster")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.sentinels, [("127.0.0.1".to_owned(), 26380)]);
        assert_eq!((url.master.as_str(), url.db), ("mymaster", 0));
        assert_eq!((url.username, url.password), (None, None));

        let url = parse_sentinel(
            "redis+sentinel://s%40cret@a:1,b,[::1]:3/my%2Dmaster/2?sentinel_password=x%26y",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            url.sentinels,
            [
                ("a".to_owned(), 1),
                ("b".to_owned(), 26379),
                ("::1".to_owned(), 3)
            ]
        );
        assert_eq!((url.master.as_str(), url.db), ("my-master", 2));
        assert_eq!(url.password.as_deref(), Some("s@cret"));
        assert_eq!(url.sentinel_password.as_deref(), Some("x&y"));
        assert!(!format!("{url:?}").contains("s@cret"));

        let url = parse_sentinel("redis+sentinel://user:pw@h/m/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.username.as_deref(), Some("user"));
        assert_eq!(url.password.as_deref(), Some("pw"));
        let url = parse_sentinel("redis+sentinel://:pw@h/m").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((url.username, url.password.as_deref()), (None, Some("pw")));
    }

    #[test]
    fn malformed_urls_are_refused() {
        for bad in [
            "redis://h/m",
            "redis+sentinel://h:26379",
            "redis+sentinel://h:26379/",
            "redis+sentinel://h:x/m",
            "redis+sentinel://h:0/m",
            "redis+sentinel://,h/m",
            "redis+sentinel://h/m/-1",
            "redis+sentinel://h/m/1/extra",
            "redis+sentinel://h/m?db=1",
            "redis+sentinel://[::1/m",
        ] {
            assert!(parse_sentinel(bad).is_err(), "{bad}");
        }
    }
}
