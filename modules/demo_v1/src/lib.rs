//! The `hotswap demo` module `demo`, version 1: a tally server keeping a running total.
//! See `modules/common/demo.rs`.

const VSN: &str = "1";

/// The state of a tally server in version 1.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct State {
    /// The server's name.
    pub name: String,
    /// The running total.
    pub total: u64,
    /// How many `Add` requests it has handled.
    pub count: u64,
}

impl State {
    fn new(name: String) -> State {
        State {
            name,
            total: 0,
            count: 0,
        }
    }

    fn add(&mut self, amount: u64) {
        self.total = self.total.wrapping_add(amount);
        self.count += 1;
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
            since_upgrade: None,
        }
    }
}

include!("../../common/demo.rs");

hotswap::module! {
    name: "demo",
    version: "1",
    exports: [start, serve as "loop"],
}
