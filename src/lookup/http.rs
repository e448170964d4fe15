//! One GET to the lookup service: resolve, connect, TLS for `https://`,
//! HTTP/1.1 with hyper's client connection over tokio (hyper-util's
//! `TokioIo`), the body read up to [`MAX_BODY`]. A new connection per
//! request, closed after it (`Connection: close`): the cache and the
//! single flight keep requests few. The caller bounds the whole of it with
//! `user_lookup_timeout`.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, CONNECTION, HOST, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::answer::Failure;
use super::url::UrlTemplate;

/// The largest answer body read; a longer one is a malformed answer.
pub const MAX_BODY: usize = 64 * 1024;

/// Aborts the connection task when the request is done or abandoned.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// GETs `target` (path and query) from `url`'s server: the status and body.
pub async fn get(
    url: &UrlTemplate,
    target: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(u16, Bytes), Failure> {
    let (host, port) = (url.host(), url.port());
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Failure::Io(format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(format!("cannot connect to {a}: {e}")),
        }
    }
    let Some(stream) = stream else {
        return Err(Failure::Io(
            last.unwrap_or_else(|| format!("{host} has no address")),
        ));
    };
    let _ = stream.set_nodelay(true);
    let req = Request::get(target)
        .header(HOST, url.host_header())
        .header(ACCEPT, "application/json")
        .header(USER_AGENT, concat!("ftpgate/", env!("CARGO_PKG_VERSION")))
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::Io(format!("cannot build the request: {e}")))?;
    match (url.is_https(), tls) {
        (true, Some(cfg)) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| Failure::Io(format!("`{host}` is not a TLS server name: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(cfg))
                .connect(name, stream)
                .await
                .map_err(|e| Failure::Io(format!("TLS with {host}: {e}")))?;
            exchange(tls, req).await
        }
        (true, None) => Err(Failure::Io("https without a TLS configuration".into())),
        (false, _) => exchange(stream, req).await,
    }
}

/// Sends `req` on `io` and reads the whole reply.
async fn exchange<IO>(io: IO, req: Request<Empty<Bytes>>) -> Result<(u16, Bytes), Failure>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| Failure::Io(format!("HTTP: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http)?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let resp = sender.send_request(req).await.map_err(http)?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Failure::Malformed(format!("the body is longer than {MAX_BODY} bytes"))
            } else {
                Failure::Io(format!("HTTP: reading the body: {e}"))
            }
        })?
        .to_bytes();
    Ok((status, body))
}

/// The TLS client configuration for an `https://` service: the CA
/// certificates in `ca` (`user_lookup_ca`), else the system's.
pub fn client_config(ca: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = crate::tls::read_certs("user_lookup_ca", path).map_err(|e| match e {
                crate::tls::TlsError::File { path, message, .. } => {
                    format!("{}: {message}", path.display())
                }
                other => other.to_string(),
            })?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no CA certificate found on this system ({}); name the CA of the lookup service in user_lookup_ca",
                    found
                        .errors
                        .first()
                        .map_or_else(|| "the store is empty".to_owned(), |e| e.to_string())
                ));
            }
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
