//! Integration tests: the real server on ephemeral ports, spoken to over real sockets.

mod common;
mod login;
mod postgres;
mod storage;
mod streams;
