//! The `hotswap demo` module `demo`, version 2: the same tally server, whose state has a new
//! field, `since_upgrade`. State carried over from version 1 has no such field: it decodes
//! with the field's default (0), which is how a state format evolves across a live upgrade.
//! See `modules/common/demo.rs`.

const VSN: &str = "2";

/// The state of a tally server in version 2.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct State {
    /// The server's name.
    pub name: String,
    /// The running total.
    pub total: u64,
    /// How many `Add` requests it has handled.
    pub count: u64,
    /// New in version 2: requests handled since the process started running version 2.
    /// Absent from a version-1 state, so it starts at 0 at the upgrade.
    #[serde(default)]
    pub since_upgrade: u64,
}

impl State {
    fn new(name: String) -> State {
        State {
            name,
            total: 0,
            count: 0,
            since_upgrade: 0,
        }
    }

    fn add(&mut self, amount: u64) {
        self.total = self.total.wrapping_add(amount);
        self.count += 1;
        self.since_upgrade += 1;
    }

    fn total(&self) -> u64 {
        self.total
    }

    fn snapshot(&self, server: Pid) -> Snapshot {
        Snapshot {
            server,
            version: VSN.to_string(),
            name: self.name.clone(),
            total: self.total,
            count: self.count,
            since_upgrade: Some(self.since_upgrade),
        }
    }
}

include!("../../common/demo.rs");

hotswap::module! {
    name: "demo",
    version: "2",
    exports: [start, serve as "loop"],
}
