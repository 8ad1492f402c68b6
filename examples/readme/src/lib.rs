//! The README's Rust blocks, compiled and run as doctests of a crate that has only the
//! dev-dependencies the README lists, so that they cannot drift from what a plugin author sees.

#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct Readme;
