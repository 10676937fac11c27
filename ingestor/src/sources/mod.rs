//! Input sources, one folder each with the same shape: the source (`mod.rs`), its errors
//! (`error.rs`) and its tests.

pub mod zeromq;
