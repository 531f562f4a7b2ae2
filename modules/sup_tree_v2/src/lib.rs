//! Supervisor fixture, version 2 of `sup_tree`: the tree of version 1 with its intensity
//! raised by 10 and one more child, `added_in_v2` (a copy of the first child's worker), so
//! that a supervisor code change (spec §4.8) has new flags and a new id to take. The same
//! goes for the subtrees it builds inline; a tree whose argument says `same_in_v2` keeps
//! version 1's flags and children.

#[path = "../../common/sup_types.rs"]
pub mod types;

use hotswap::supervisor::Spec;
use types::TreeArg;

/// The supervisor callback.
#[derive(Debug)]
pub struct Tree;

fn v2(arg: &TreeArg) -> Option<Spec> {
    let spec = arg.spec_by(&v2)?;
    if arg.same_in_v2 {
        return Some(spec);
    }
    let extra = arg.children.first().map(|c| {
        let mut cfg = c.config.clone();
        cfg.id = "added_in_v2".into();
        cfg.spec()
    });
    let intensity = spec.intensity + 10;
    let spec = spec.intensity(intensity);
    Some(match extra {
        Some(e) => spec.child(e),
        None => spec,
    })
}

impl hotswap::supervisor::Supervisor for Tree {
    type Arg = TreeArg;
    fn init(arg: TreeArg) -> Option<Spec> {
        v2(&arg)
    }
}

hotswap::module! { name: "sup_tree", version: "2", supervisor: Tree }
