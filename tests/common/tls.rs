//! Throwaway TLS material for broker tests: a CA, a server certificate for
//! 127.0.0.1 and localhost, and a client certificate, all signed by that CA,
//! written as PEM files into a fresh directory (removed on drop).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// CA parameters OpenSSL (redis-server) accepts as an issuer.
fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

pub struct TlsFiles {
    dir: PathBuf,
}

impl TlsFiles {
    pub fn new() -> TlsFiles {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("myriad-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca =
            CertifiedIssuer::self_signed(ca_params("myriad test CA"), KeyPair::generate().unwrap())
                .unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        for (name, sans, purpose) in [
            (
                "server",
                vec!["127.0.0.1".to_string(), "localhost".to_string()],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            (
                "client",
                vec!["myriad-node".to_string()],
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![purpose];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.use_authority_key_identifier_extension = true;
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
        }
        // A second CA that signed nothing here: trusting it must fail.
        let other =
            CertifiedIssuer::self_signed(ca_params("another CA"), KeyPair::generate().unwrap())
                .unwrap();
        std::fs::write(dir.join("other-ca.pem"), other.pem()).unwrap();
        TlsFiles { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
