//! Stand-ins for AWS services on 127.0.0.1, speaking the real protocols:
//! used by the test suite, the benchmarks and `qbox demo`, where the real
//! services cannot be reached.

pub mod oidc;
pub mod q;
