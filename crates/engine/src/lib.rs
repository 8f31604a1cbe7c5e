//! The compute engine: everything that does tensor math.
//!
//! Synchronous by design (candle is), with no database, network or UI: the studio runs it on
//! its own thread and listens to its events.

pub mod device;

pub use device::{detect_devices, DeviceInfo, DeviceKind};
