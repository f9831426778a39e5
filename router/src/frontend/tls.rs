//! TLS for clients: the acceptor built from `tls_certificate` and
//! `tls_private_key`, with client-certificate verification when `tls_ca` is set.

use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: String },
    #[error("{path}: no PEM private key found")]
    NoKey { path: String },
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let file = File::open(path).map_err(|source| TlsSetupError::Read { path: path.into(), source })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<_, _>>()
        .map_err(|source| TlsSetupError::Read { path: path.into(), source })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

fn key(path: &str) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let file = File::open(path).map_err(|source| TlsSetupError::Read { path: path.into(), source })?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|source| TlsSetupError::Read { path: path.into(), source })?
        .ok_or_else(|| TlsSetupError::NoKey { path: path.into() })
}

pub fn acceptor(cert: &str, key_path: &str, ca: Option<&str>) -> Result<TlsAcceptor, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    let builder = match ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config =
        builder.with_single_cert(certs(cert)?, key(key_path)?).map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
