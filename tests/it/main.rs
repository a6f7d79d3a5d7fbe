//! Integration tests: the real binary, in a temporary root, on a free loopback port.
//! One test binary (modules per area) keeps link time down.

mod helpers;
mod smoke;
