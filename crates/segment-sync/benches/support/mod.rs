//! What the benchmarks share: generated customers, the receiver in a child
//! process, and exact per-process CPU and memory.

// Each bench uses its own subset of these helpers.
#![allow(dead_code)]

pub mod customers;
pub mod postgres;
pub mod process;
pub mod receiver;
