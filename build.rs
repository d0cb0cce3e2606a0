//! Link-time settings for the bridge binary.
//!
//! Relative relocations are packed (`DT_RELR`): a position-independent executable otherwise
//! carries ~0.6 MiB of 24-byte relocation records that the loader reads, and keeps resident,
//! at every start. Linkers that do not know the option (binutils < 2.38) warn and ignore it;
//! `ld` only packs when the C library supports it (glibc ≥ 2.36).

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
