//! TLS for outgoing HTTPS (homeserver, StackStorm): rustls with the ring provider, and the
//! platform's certificate verifier (system roots, plus whatever the OS trusts).

/// Installs ring as the process-wide rustls provider. Idempotent: later calls (or another
/// library having installed one first) change nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_can_be_built_after_installing_the_provider() {
        super::install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        reqwest::Client::builder().build().expect("client builds");
    }
}
