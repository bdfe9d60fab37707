//! TLS for the agent-coordinator channel (rustls, via tonic): the coordinator presents a
//! certificate and may require client certificates (mutual TLS); agents verify it against a
//! CA file and may present their own. Files are PEM, regular files of at most
//! [`MAX_PEM_BYTES`]; errors name the file.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A TLS file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {what} {path}: {source}")]
pub struct TlsFileError {
    what: &'static str,
    path: String,
    source: crate::input::ReadError,
}

/// Largest PEM file read (a certificate chain is a few KiB; this bounds a wrong path).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsFileError> {
    crate::input::read_bounded(path, MAX_PEM_BYTES)
        .map(|f| f.bytes)
        .map_err(|source| TlsFileError {
            what,
            path: path.display().to_string(),
            source,
        })
}

/// The coordinator's TLS: its certificate chain and key, and, for mutual TLS, the CA that
/// agents' client certificates must chain to.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerTlsConfig, TlsFileError> {
    let identity = Identity::from_pem(read(cert, "TLS certificate")?, read(key, "TLS key")?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca, "client CA")?));
    }
    Ok(config)
}

/// An agent's TLS: the CA that signed the coordinator's certificate, the name to verify it
/// against, and optionally a client certificate and key for mutual TLS.
pub fn client_config(
    ca: &Path,
    domain: &str,
    identity: Option<(&Path, &Path)>,
) -> Result<ClientTlsConfig, TlsFileError> {
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca, "TLS CA")?))
        .domain_name(domain);
    if let Some((cert, key)) = identity {
        config = config.identity(Identity::from_pem(
            read(cert, "TLS certificate")?,
            read(key, "TLS key")?,
        ));
    }
    Ok(config)
}
