//! Turns `OTOOLS_VERSIONED=noexport` into a cfg, so that version exports
//! its service under another name.

fn main() {
    println!("cargo::rerun-if-env-changed=OTOOLS_VERSIONED");
    println!("cargo::rustc-check-cfg=cfg(versioned_noexport)");
    if std::env::var("OTOOLS_VERSIONED").as_deref() == Ok("noexport") {
        println!("cargo::rustc-cfg=versioned_noexport");
    }
}
