//! otools binary.
fn main() {}
