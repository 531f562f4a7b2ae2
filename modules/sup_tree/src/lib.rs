//! Supervisor fixture: a module whose `Supervisor::init` builds the tree its argument
//! describes (strategy, intensity, `sup_worker` children), or returns `ignore`.

#[path = "../../common/sup_types.rs"]
pub mod types;

use types::TreeArg;

/// The supervisor callback.
#[derive(Debug)]
pub struct Tree;

impl hotswap::supervisor::Supervisor for Tree {
    type Arg = TreeArg;
    fn init(arg: TreeArg) -> Option<hotswap::supervisor::Spec> {
        arg.spec()
    }
}

hotswap::module! { name: "sup_tree", version: "1", supervisor: Tree }
