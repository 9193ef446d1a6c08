//! Certificates for TLS tests: a certificate authority of a test's own (rcgen), issuing into a
//! folder of the test's own, removed when dropped.

/// A certificate authority of a test's own, issuing into a folder of the test's own.
pub struct Pki {
    dir: std::path::PathBuf,
}

/// A certificate and its key, as PEM files.
pub struct Issued {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl Pki {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("scimtest_pki_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Pki { dir }
    }

    /// A CA; its certificate is written to `<name>.pem`.
    pub fn ca(&self, name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
        std::fs::write(self.dir.join(format!("{name}.pem")), ca.pem()).unwrap();
        ca
    }

    /// A certificate for `localhost` and `127.0.0.1`, for servers and clients, that `ca` issued.
    pub fn issue(&self, ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, name: &str) -> Issued {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, ca).unwrap();
        let issued = Issued { cert: self.dir.join(format!("{name}.crt")), key: self.dir.join(format!("{name}.key")) };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    pub fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.join(file)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
