//! Shared helpers for Peernotes' integration tests: editing traces, running the
//! `peernotes` binary, and temporary data dirs.
