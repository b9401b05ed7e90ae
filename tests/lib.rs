//! Nothing lives here: this package only holds the `integration` test
//! target (`main.rs`). Cargo needs a target besides tests to build the
//! package inside the workspace.
