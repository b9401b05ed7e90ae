//! The otools host: loads plugin libraries and runs the deployment a
//! manifest describes.
//!
//! Concepts: a [`manifest::Manifest`] names *dataframes* (host-owned
//! key/value stores, [`dataframe`]), *contexts* (one main loop each, on its
//! own thread, [`runtime`]), the *services* each context runs and the
//! *triggers* (conditions that fire a stack of services). [`deploy`] turns a
//! manifest into instances built from plugins ([`plugin`]); [`instance`] is
//! the host handle every plugin call receives; [`supervisor`] runs the
//! contexts; [`signals`] handles signals from the start of `run`;
//! [`threads`] starts the host's threads; [`cli`] is the command line and
//! [`logging`] the log format; [`event`] holds the typed lifecycle events
//! and the sinks they are delivered to.

pub mod cli;
pub mod dataframe;
pub mod deploy;
pub mod event;
pub mod exit;
pub mod instance;
pub mod logging;
pub mod manifest;
pub mod plugin;
pub mod reload;
pub mod runtime;
pub mod signals;
pub mod supervision;
pub mod supervisor;
pub mod threads;
