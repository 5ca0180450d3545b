//! Connection settings the way `psql` users expect: the URL, then the
//! `PG*` environment variables, then `~/.pgpass` for the password.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;

/// How TLS is used, as libpq's `sslmode` (`allow`, `verify-ca` are not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not checked.
    Prefer,
    /// TLS, without checking the certificate (as libpq without a root file).
    Require,
    /// TLS, the certificate checked against the system's roots and the host name.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(format!(
                "sslmode `{other}` is not one of disable, prefer, require, verify-full"
            )),
        }
    }
}

/// A resolved connection: where, who, and how (the password inside is
/// never printed: see [`ConnectionSettings::redacted`]).
#[derive(Clone)]
pub(super) struct ConnectionSettings {
    pub config: tokio_postgres::Config,
    pub ssl: SslMode,
}

/// Reads the environment; a test passes its own.
pub(super) trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    fn home(&self) -> Option<PathBuf>;
}

/// The process environment.
pub(super) struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
    fn home(&self) -> Option<PathBuf> {
        self.var("HOME").map(PathBuf::from)
    }
}

impl ConnectionSettings {
    /// Resolves `url` (`postgres://` or `postgresql://`, every part
    /// optional) with the `PG*` variables and the password file.
    pub fn resolve(url: &str, env: &dyn Environment) -> Result<ConnectionSettings, String> {
        let (base, ssl_in_url) = split_sslmode(url)?;
        let mut config = tokio_postgres::Config::from_str(&base)
            .map_err(|e| format!("cannot read the connection URL {}: {e}", redact_url(url)))?;
        if config.get_hosts().is_empty() {
            let hosts = env.var("PGHOST").unwrap_or_else(|| "localhost".to_owned());
            for host in hosts.split(',') {
                match host.starts_with('/') {
                    true => config.host_path(host),
                    false => config.host(host),
                };
            }
        }
        if config.get_ports().is_empty()
            && let Some(port) = env.var("PGPORT")
        {
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("PGPORT `{port}` is not a port number"))?;
            config.port(port);
        }
        if config.get_user().is_none() {
            let user = env
                .var("PGUSER")
                .or_else(|| env.var("USER"))
                .unwrap_or_else(|| "postgres".to_owned());
            config.user(user);
        }
        if config.get_dbname().is_none() {
            let db = env
                .var("PGDATABASE")
                .unwrap_or_else(|| config.get_user().unwrap_or("postgres").to_owned());
            config.dbname(db);
        }
        if config.get_password().is_none() {
            if let Some(password) = env.var("PGPASSWORD") {
                config.password(password);
            } else if let Some(password) = pgpass_lookup(&config, env) {
                config.password(password);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("segment-sync");
        }
        let ssl = match ssl_in_url.or_else(|| env.var("PGSSLMODE")) {
            Some(mode) => SslMode::parse(&mode)?,
            None => SslMode::Prefer,
        };
        Ok(ConnectionSettings { config, ssl })
    }

    /// `postgres://user@host:port/db`: the settings without the password.
    pub fn redacted(&self) -> String {
        let user = self.config.get_user().unwrap_or("");
        let host = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let db = self.config.get_dbname().unwrap_or("");
        format!("postgres://{user}@{host}:{port}/{db}")
    }

    /// `host:port`, for hints.
    pub fn server(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(name)) => name.clone(),
            #[cfg(unix)]
            Some(Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }
}

/// The URL with its password replaced by `***`, for messages about a URL
/// that could not even be parsed.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return redact_query(url);
    };
    let user = userinfo.split(':').next().unwrap_or("");
    let shown = match userinfo.contains(':') {
        true => format!("{scheme}://{user}:***@{host}{tail}"),
        false => format!("{scheme}://{user}@{host}{tail}"),
    };
    redact_query(&shown)
}

/// A `password=` query parameter replaced by `***`.
fn redact_query(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some(("password", _)) => "password=***".to_owned(),
            _ => p.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

/// Takes `sslmode` out of the URL's query: tokio-postgres does not know
/// `verify-full`, and TLS is set up here.
fn split_sslmode(url: &str) -> Result<(String, Option<String>), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "{} is not a postgres:// or postgresql:// URL",
            redact_url(url)
        ));
    }
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut ssl = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| match p.strip_prefix("sslmode=") {
            Some(mode) => {
                ssl = Some(mode.to_owned());
                false
            }
            None => !p.is_empty(),
        })
        .collect();
    let base = match kept.is_empty() {
        true => base.to_owned(),
        false => format!("{base}?{}", kept.join("&")),
    };
    Ok((base, ssl))
}

/// The password for this connection from `PGPASSFILE` or `~/.pgpass`:
/// `host:port:database:user:password` lines, `*` matching anything, `\`
/// escaping `:` and `\`. As libpq, a file others can read is ignored.
fn pgpass_lookup(config: &tokio_postgres::Config, env: &dyn Environment) -> Option<String> {
    let path = env
        .var("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| env.home().map(|h| h.join(".pgpass")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            return None;
        }
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match config.get_hosts().first()? {
        Host::Tcp(name) => name.clone(),
        #[cfg(unix)]
        Host::Unix(_) => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let wanted = [
        host.as_str(),
        port.as_str(),
        config.get_dbname().unwrap_or(""),
        config.get_user().unwrap_or(""),
    ];
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass(line);
            if fields.len() != 5 {
                return None;
            }
            let matches = fields[..4]
                .iter()
                .zip(wanted)
                .all(|(field, want)| field == "*" || field == want);
            matches.then(|| fields[4].clone())
        })
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct FakeEnv(HashMap<&'static str, String>, Option<PathBuf>);

    impl Environment for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
        fn home(&self) -> Option<PathBuf> {
            self.1.clone()
        }
    }

    fn env(vars: &[(&'static str, &str)]) -> FakeEnv {
        FakeEnv(
            vars.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            None,
        )
    }

    #[test]
    fn the_url_wins_then_the_environment_fills_in() {
        let vars = env(&[
            ("PGHOST", "db.internal"),
            ("PGPORT", "6543"),
            ("PGUSER", "reader"),
            ("PGDATABASE", "crm"),
            ("PGPASSWORD", "s3cret"),
            ("PGSSLMODE", "require"),
        ]);
        let s = ConnectionSettings::resolve("postgres://", &vars).unwrap();
        assert_eq!(s.redacted(), "postgres://reader@db.internal:6543/crm");
        assert_eq!(s.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(s.ssl, SslMode::Require);

        let s = ConnectionSettings::resolve(
            "postgresql://app:pw@127.0.0.1:5432/shop?sslmode=disable",
            &vars,
        )
        .unwrap();
        assert_eq!(s.redacted(), "postgres://app@127.0.0.1:5432/shop");
        assert_eq!(s.config.get_password(), Some(&b"pw"[..]));
        assert_eq!(s.ssl, SslMode::Disable);
    }

    #[test]
    fn verify_full_is_understood_and_unknown_modes_refused() {
        let s =
            ConnectionSettings::resolve("postgres://h/db?sslmode=verify-full", &env(&[])).unwrap();
        assert_eq!(s.ssl, SslMode::VerifyFull);
        let err = ConnectionSettings::resolve("postgres://h/db?sslmode=allow", &env(&[]))
            .err()
            .unwrap();
        assert!(err.contains("sslmode `allow`"), "{err}");
    }

    #[test]
    fn pgpass_supplies_the_password_with_wildcards_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".pgpass");
        std::fs::write(
            &path,
            "# comment\nother:5432:*:app:nope\n127.0.0.1:*:shop:app:pa\\:ss\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let vars = FakeEnv(HashMap::new(), Some(dir.path().to_path_buf()));
        let s = ConnectionSettings::resolve("postgres://app@127.0.0.1/shop", &vars).unwrap();
        assert_eq!(s.config.get_password(), Some(&b"pa:ss"[..]));
    }

    #[test]
    fn a_url_password_is_never_shown() {
        assert_eq!(
            redact_url("postgres://app:hunter2@h:5432/db?sslmode=require"),
            "postgres://app:***@h:5432/db?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=a&password=hunter2"),
            "postgres://h/db?user=a&password=***"
        );
        let err = ConnectionSettings::resolve("postgres://app:hunter2@h:notaport/db", &env(&[]))
            .err()
            .unwrap();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
