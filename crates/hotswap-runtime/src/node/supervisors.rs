//! Supervisors as host code starts and asks them.

use hotswap::{codec, Pid};
use serde::Serialize;

use super::Node;
use crate::behaviour::supervisor::{start_unlinked, Source, Spec, SupError, Supervisors};

impl Node {
    /// Start a supervisor of the tree `spec` (registered as `name`) and wait until its
    /// children have started. It has no parent: stop it with an exit signal from host code
    /// (`node.exit(pid, ExitReason::Shutdown)`) or `stop_server`.
    pub async fn start_supervisor(&self, spec: Spec, name: Option<&str>) -> Result<Pid, SupError> {
        start_unlinked(&self.inner, Source::Spec(spec), name.map(str::to_string))
            .await
            .map(|p| p.expect("a spec built in Rust is never ignored"))
    }

    /// Start a supervisor whose tree `module`'s `Supervisor::init(arg)` describes. `None`
    /// when `init` returned ignore.
    pub async fn start_supervisor_module<A: Serialize + ?Sized>(
        &self,
        module: &str,
        arg: &A,
        name: Option<&str>,
    ) -> Result<Option<Pid>, SupError> {
        let source = Source::Module {
            module: module.into(),
            arg: codec::encode(arg),
        };
        start_unlinked(&self.inner, source, name.map(str::to_string)).await
    }

    /// The supervisor client operations (`supervisor:start_child` and the others).
    pub fn supervisor(&self) -> Supervisors<'_> {
        Supervisors::new(&self.inner)
    }
}
