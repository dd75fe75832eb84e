//! What keeps a run directory whole through a crash, a full disk or a second process, apart from
//! the training pipeline that writes it ([`crate::run`]): its layout ([`dir`]), one process per
//! directory ([`lock`]), files written atomically ([`atomic`]) with checksums ([`checksum`]) by
//! Burn's checkpointers ([`checkpointer`]), the newest epoch that verifies ([`resume`]), how the
//! last process ended ([`ending`]), and the failures tests inject ([`fault`]).

pub mod atomic;
pub mod checkpointer;
pub mod checksum;
pub mod dir;
pub mod ending;
pub mod fault;
pub mod lock;
pub mod resume;
