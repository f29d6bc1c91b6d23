//! Integration tests: the real server on ephemeral ports, spoken to over real sockets.

mod bosh;
mod browser;
mod certificates;
mod common;
mod contacts;
mod directory_api;
mod faults;
mod hardening;
mod interop;
mod load;
mod login;
mod monitoring;
mod operations;
mod policy;
mod postgres;
mod rooms;
mod sso;
mod storage;
mod streams;
mod websocket;
