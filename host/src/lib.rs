//! otools host library.
