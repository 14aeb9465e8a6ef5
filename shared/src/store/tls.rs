//! How the MySQL connection is secured when DATABASE_URL does not say.
//!
//! sqlx's default, `PREFERRED`, encrypts when the server offers TLS but accepts any
//! certificate, so anyone on the path can stand in for the database. For a server that is not
//! this machine the default here is `VERIFY_IDENTITY`: the certificate must chain to a trusted
//! CA and name the host in the URL. Aurora's and RDS Proxy's certificates name the endpoints
//! clients use (cluster, reader, instance, proxy), so this holds there; behind a private DNS
//! alias, say `ssl-mode=VERIFY_CA` in the URL instead. Trusted CAs are the built-in public
//! roots (enough for RDS Proxy, whose certificates come from ACM) plus the file `ssl-ca`
//! names (for Aurora directly: the RDS global bundle, see the README's Deployment).
//! Whatever the URL says about `ssl-mode` wins; loopback keeps `PREFERRED` for the local job.

use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};

/// The mode for a server at `host` when the URL names none.
pub fn default_ssl_mode(host: &str) -> MySqlSslMode {
    if is_loopback(host) {
        MySqlSslMode::Preferred
    } else {
        MySqlSslMode::VerifyIdentity
    }
}

/// `options` parsed from `url`, with the default mode applied when the URL names none.
pub fn secure_by_default(url: &str, options: MySqlConnectOptions) -> MySqlConnectOptions {
    if names_ssl_mode(url) || names_socket(url) {
        return options;
    }
    let mode = default_ssl_mode(options.get_host());
    options.ssl_mode(mode)
}

pub fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]")
}

/// Whether the query string sets `ssl-mode` (or its alias `sslmode`), as sqlx reads it.
fn names_ssl_mode(url: &str) -> bool {
    query_keys(url).any(|key| key == "ssl-mode" || key == "sslmode")
}

/// A Unix socket is this machine: no TLS to verify.
fn names_socket(url: &str) -> bool {
    query_keys(url).any(|key| key == "socket")
}

fn query_keys(url: &str) -> impl Iterator<Item = &str> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query
        .split('&')
        .map(|pair| pair.split_once('=').map_or(pair, |(key, _)| key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> MySqlSslMode {
        let options: MySqlConnectOptions = url.parse().expect("a MySQL URL");
        secure_by_default(url, options).get_ssl_mode()
    }

    #[test]
    fn the_ssl_mode_defaults_to_verifying_except_on_this_machine() {
        use MySqlSslMode::*;
        let cases = [
            ("mysql://root@127.0.0.1:3306/test", Preferred),
            ("mysql://root@localhost/test", Preferred),
            ("mysql://root@[::1]:3306/test", Preferred),
            (
                "mysql://app:pw@calls.cluster-abc.eu-west-1.rds.amazonaws.com:3306/calls",
                VerifyIdentity,
            ),
            (
                "mysql://app:pw@calls-proxy.proxy-abc.eu-west-1.rds.amazonaws.com/calls",
                VerifyIdentity,
            ),
            ("mysql://app@10.0.3.7/calls", VerifyIdentity),
            (
                "mysql://app@db.internal/calls?ssl-ca=/opt/rds/global-bundle.pem",
                VerifyIdentity,
            ),
            // The URL decides when it says.
            ("mysql://app@db.internal/calls?ssl-mode=VERIFY_CA", VerifyCa),
            ("mysql://app@db.internal/calls?sslmode=required", Required),
            ("mysql://app@db.internal/calls?ssl-mode=DISABLED", Disabled),
            (
                "mysql://app@db.internal/calls?ssl-mode=PREFERRED",
                Preferred,
            ),
            (
                "mysql://root@127.0.0.1/test?ssl-mode=VERIFY_IDENTITY",
                VerifyIdentity,
            ),
            // A value that merely contains the words is not the key.
            (
                "mysql://app@db.internal/calls?ssl-ca=/tmp/ssl-mode=DISABLED.pem",
                VerifyIdentity,
            ),
            (
                "mysql://root@localhost/test?socket=/run/mysqld/mysqld.sock",
                Preferred,
            ),
        ];
        for (url, want) in cases {
            assert_eq!(format!("{:?}", mode(url)), format!("{want:?}"), "{url}");
        }
    }
}
