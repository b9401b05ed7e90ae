//! The otools host: loads plugin libraries and runs the deployment a
//! manifest describes.
//!
//! Concepts: a [`manifest::Manifest`] names *dataframes* (host-owned
//! key/value stores, [`dataframe`]), *contexts* (one main loop each, on its
//! own thread, [`runtime`]), the *services* each context runs and the
//! *triggers* (conditions that fire a stack of services), and *pipelines*
//! (stages of workers connected by bounded queues, [`pipeline`]). [`plan`]
//! turns a manifest into a plan of contexts and pipelines built from plugins ([`plugin`]);
//! [`instance`] is the host handle every plugin call receives;
//! [`supervision`] holds the watchdog and the restart rules; [`reload`]
//! swaps a changed library in; [`control`] is the control socket that
//! `otools status` and `otools stop` talk to; [`host`] runs the contexts and decides the
//! exit code ([`exit`]); [`signals`] handles signals from the start of
//! `run`; [`threads`] starts the host's threads; [`cli`] is the command line
//! and [`logging`] the log format; [`event`] holds the typed lifecycle
//! events and the sinks they are delivered to; [`messaging`] routes
//! messages between services' mailboxes.
//!
//! Layers, lowest first (a module uses only modules of lower layers; the
//! integration test `layout` checks it from this source): `exit`,
//! `logging`, `dataframe`, `plugin`; `manifest` (pure data); `event`;
//! `threads`; `signals`, `supervision`, `messaging`; `instance`; `flow`; `plan`;
//! `runtime`, `pipeline`; `reload`, `control`; `host`; `cli`.

pub mod cli;
pub mod control;
pub mod dataframe;
pub mod event;
pub mod exit;
pub mod flow;
pub mod host;
pub mod instance;
pub mod logging;
pub mod manifest;
pub mod messaging;
pub mod pipeline;
pub mod plan;
pub mod plugin;
pub mod reload;
pub mod runtime;
pub mod signals;
pub mod supervision;
pub mod threads;
