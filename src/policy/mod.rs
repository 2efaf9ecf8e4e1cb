//! Decisions on parsed queries. Pure functions of a message and its context: no sockets, and
//! time, where it matters, comes in as an argument.

pub mod aaaa;
mod admit;
pub mod collapse;
pub mod root;
pub mod search;
pub mod stubs;

pub use admit::{Admission, ParsedQuery, admit};
