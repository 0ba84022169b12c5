//! Test support, by role: [`gateway`] runs the gateway under test (in process or as the
//! binary), [`client`] talks to it, [`upstream`] stands up scripted upstream servers,
//! [`config`] writes its config file and [`certs`] makes certificates. Everything is
//! re-exported here, so a test file says `mod common; use common::*;`.

// Test support is shared by test binaries that each use part of it, and is public within
// each test crate only.
#![allow(dead_code, unreachable_pub)]

pub mod certs;
mod client;
mod config;
mod gateway;
mod redis;
mod upstream;

// Each test binary uses some of these; the rest would be "unused" there.
#[allow(unused_imports)]
pub use client::{admin, admin_with, get, metric, metric_reaches, slow_client, Client, Resp};
#[allow(unused_imports)]
pub use config::{config, Cfg};
#[allow(unused_imports)]
pub use gateway::{
    check_config, closed_port, driver, eventually, free_port, unanswering_port, Gw, Proc, TempDir,
    IO_TIMEOUT, TOKEN,
};
#[allow(unused_imports)]
pub use redis::Redis;
#[allow(unused_imports)]
pub use upstream::{respond, Action, RawOrigin, Seen, Upstream};
