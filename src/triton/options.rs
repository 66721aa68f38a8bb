//! Where a Triton server is and how to talk to it: options that exist in every build, whether or not it
//! has the gRPC client (the `triton` feature).

use std::time::Duration;

/// Where the server is and how to talk to it.
#[derive(Debug, Clone)]
pub struct TritonOptions {
    /// The server's gRPC address: `grpc://HOST:PORT` (or `http://HOST:PORT`). No default.
    pub url: String,
    /// The model prefix: the server's models are `NAME_prior` and `NAME_backbone`. Default: the bundle's
    /// name (what `diffir triton-repo` uses when it is not given `--name`).
    pub model: Option<String>,
    /// The deadline of each request. Default: 120 s.
    pub timeout: Duration,
    /// How long UNAVAILABLE is retried (backoff from 100 ms, doubling, at most 2 s apart). Default: 15 s.
    pub retry_for: Duration,
}

impl TritonOptions {
    /// Options for `url` with the defaults above.
    pub fn new(url: impl Into<String>) -> Self {
        TritonOptions {
            url: url.into(),
            model: None,
            timeout: Duration::from_secs(120),
            retry_for: Duration::from_secs(15),
        }
    }
}

/// `--triton-url` checked: grpc:// (or http://, or none) HOST:PORT with a port in 1-65535 and nothing
/// else. Returns the URI to connect to and the address for messages. Credentials are refused, and never
/// repeated in the message.
pub fn endpoint_uri(raw: &str) -> std::result::Result<(String, String), String> {
    let raw = raw.trim();
    let (scheme, rest) = raw.split_once("://").unwrap_or(("grpc", raw));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if let Some((_, host)) = authority.rsplit_once('@') {
        return Err(format!(
            "--triton-url {scheme}://…@{host}: user names and passwords in the address are not supported (the \
             connection is not encrypted); use grpc://HOST:PORT"
        ));
    }
    let shown = format!("{scheme}://{authority}");
    if !matches!(scheme, "grpc" | "http") {
        return Err(format!(
            "--triton-url {shown}: scheme '{scheme}' is not supported (use grpc://HOST:PORT; TLS is not supported)"
        ));
    }
    if !path.is_empty() {
        return Err(format!(
            "--triton-url {raw}: a path ('/{path}') is not supported; use grpc://HOST:PORT"
        ));
    }
    let Some((host, port)) = authority
        .rsplit_once(':')
        .filter(|(h, _)| !h.is_empty() && !h.ends_with(':'))
    else {
        return Err(format!(
            "--triton-url {shown}: no port; give grpc://HOST:PORT (Triton's gRPC port is 8001 unless changed)"
        ));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => {
            return Err(format!(
                "--triton-url {shown}: port '{port}' is not a number from 1 to 65535"
            ))
        }
    }
    if host.starts_with('[') != host.ends_with(']') {
        return Err(format!("--triton-url {shown}: '{host}' is not a host name or address"));
    }
    // The rest (a valid host) is checked by the endpoint that parses it.
    Ok((format!("http://{authority}"), shown))
}

#[cfg(test)]
mod url_tests {
    use super::endpoint_uri;

    #[test]
    fn triton_urls_need_a_valid_port_and_carry_no_credentials() {
        assert_eq!(
            endpoint_uri("grpc://localhost:8001"),
            Ok(("http://localhost:8001".into(), "grpc://localhost:8001".into()))
        );
        assert_eq!(
            endpoint_uri("127.0.0.1:9").map(|u| u.0),
            Ok("http://127.0.0.1:9".into())
        );
        assert_eq!(
            endpoint_uri("grpc://[::1]:8001").map(|u| u.0),
            Ok("http://[::1]:8001".into())
        );
        for (bad, says) in [
            ("grpc://host:65536", "not a number from 1 to 65535"),
            ("grpc://host:0", "not a number from 1 to 65535"),
            ("grpc://host:80x", "not a number from 1 to 65535"),
            ("grpc://host", "no port"),
            ("grpc://[::1]", "no port"),
            ("grpcs://host:8001", "scheme 'grpcs'"),
            ("grpc://host:8001/v2", "a path"),
        ] {
            let e = endpoint_uri(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = endpoint_uri("grpc://admin:s3cret@host:8001").unwrap_err();
        assert!(
            e.contains("not supported") && !e.contains("s3cret") && !e.contains("admin"),
            "{e}"
        );
    }
}
