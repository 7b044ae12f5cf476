//! What the gateway and a feed's agent (runtime = kubernetes) tell each other besides the
//! rows: the agent says which revision it serves, and that revision's signature, so the
//! gateway can check a call's parameters before any user code runs and log the call under
//! the revision that really served it, for feeds the store has never seen (applied as YAML
//! by GitOps) and for canaries alike. Plain data: both sides' HTTP code lives in their crates.

use crate::FeedSignature;
use serde::{Deserialize, Serialize};

/// `GET` on an agent: what it serves, as [`Served`] JSON.
pub const SIGNATURE_PATH: &str = "/v1/signature";

/// The response header naming the revision that served a call: set by an agent on its
/// `/v1/call` answers, and by the gateway on feed responses.
pub const REVISION_HEADER: &str = "x-sluice-revision";

/// What an agent serves: found by loading its module in a worker when it starts, the same
/// check `sluice deploy` makes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Served {
    /// The revision's name (`SLUICE_REVISION`: the store's number, or a GitOps Feed's
    /// revision or content hash).
    pub revision: String,
    pub signature: FeedSignature,
}
