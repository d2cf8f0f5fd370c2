//! The sans-IO IKE engine: proposals, exchanges and IKE SA state, driven by an
//! explicit clock and an injected random generator.

pub mod proposal;
