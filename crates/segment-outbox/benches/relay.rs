//! The relay benchmark (written next).

fn main() {}
