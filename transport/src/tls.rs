//! Cluster membership as certificates: a cluster CA, and per node a key and a
//! certificate signed by it. Both ends of every QUIC connection must present a
//! certificate chaining to the CA; anything else fails the handshake.
//!
//! Files in a node's `tls/` directory: `ca.pem` (CA certificate), `ca.key`
//! (CA key: only on nodes allowed to admit new members), `node.pem`, `node.key`.

use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::protocol::ALPN;
use crate::TransportError;

/// The name every node certificate carries and every client verifies: membership
/// is proven by the CA's signature, not by a host name.
pub const CLUSTER_SERVER_NAME: &str = "hoody.cluster";

fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

/// A node's credentials: its certificate chain and key, and the CA it trusts.
#[derive(Clone)]
pub struct ClusterIdentity {
    pub ca_cert_pem: String,
    pub node_cert_pem: String,
    pub node_key_pem: String,
}

fn ca_params() -> Result<CertificateParams, TransportError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "hoody cluster CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// Creates a new cluster CA: `(certificate PEM, key PEM)`.
pub fn new_cluster_ca() -> Result<(String, String), TransportError> {
    let key = KeyPair::generate().map_err(tls_err)?;
    let cert = ca_params()?.self_signed(&key).map_err(tls_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Issues a node certificate signed by the CA whose key is `ca_key_pem`.
pub fn issue_node_identity(ca_cert_pem: &str, ca_key_pem: &str, node_id: &str, node_name: &str) -> Result<ClusterIdentity, TransportError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(tls_err)?;
    // Re-deriving the issuer from the same parameters and key gives the same subject
    // and key identifier, so the signature chains to the stored CA certificate.
    let issuer = ca_params()?.self_signed(&ca_key).map_err(tls_err)?;
    let mut params = CertificateParams::new(vec![CLUSTER_SERVER_NAME.to_string()]).map_err(tls_err)?;
    params.distinguished_name.push(DnType::CommonName, node_id);
    params.distinguished_name.push(DnType::OrganizationalUnitName, node_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().map_err(tls_err)?;
    let cert = params.signed_by(&key, &issuer, &ca_key).map_err(tls_err)?;
    Ok(ClusterIdentity { ca_cert_pem: ca_cert_pem.to_string(), node_cert_pem: cert.pem(), node_key_pem: key.serialize_pem() })
}

impl ClusterIdentity {
    /// Loads `ca.pem`, `node.pem`, `node.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, TransportError> {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| TransportError::Tls(format!("{}: {e}", dir.join(name).display())));
        Ok(ClusterIdentity { ca_cert_pem: read("ca.pem")?, node_cert_pem: read("node.pem")?, node_key_pem: read("node.key")? })
    }

    /// Writes the identity into `dir` (keys with mode 0600).
    pub fn save(&self, dir: &Path) -> Result<(), TransportError> {
        std::fs::create_dir_all(dir)?;
        write_file(&dir.join("ca.pem"), &self.ca_cert_pem, 0o644)?;
        write_file(&dir.join("node.pem"), &self.node_cert_pem, 0o644)?;
        write_file(&dir.join("node.key"), &self.node_key_pem, 0o600)?;
        Ok(())
    }

    fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TransportError> {
        rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(tls_err)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TransportError> {
        rustls_pemfile::private_key(&mut self.node_key_pem.as_bytes()).map_err(tls_err)?.ok_or_else(|| tls_err("no private key in node.key"))
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TransportError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in Self::certs(&self.ca_cert_pem)? {
            roots.add(cert).map_err(tls_err)?;
        }
        Ok(Arc::new(roots))
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// TLS for accepting peers: a client certificate from the cluster CA is required.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TransportError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots()?, Self::provider()).build().map_err(tls_err)?;
        let mut config = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(Self::certs(&self.node_cert_pem)?, self.key()?)
            .map_err(tls_err)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// TLS for calling peers: the peer must show a certificate from the cluster CA.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TransportError> {
        let mut config = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(Self::certs(&self.node_cert_pem)?, self.key()?)
            .map_err(tls_err)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), TransportError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
