// Version 2's state of the rel_srv fixtures (included after common/rel_srv.rs).

/// Version 2's state.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct State {
    /// The server's id.
    pub id: u64,
    /// What version 1 called `count`.
    pub total: u64,
    /// The version its state was migrated from ("init" if none).
    pub upgraded_from: String,
}

impl State {
    fn from_v1(v: V1, origin: &str) -> State {
        State {
            id: v.id,
            total: v.count,
            upgraded_from: origin.into(),
        }
    }
    fn to_v1(&self) -> V1 {
        V1 {
            id: self.id,
            count: self.total,
        }
    }
    fn origin(&self) -> &str {
        &self.upgraded_from
    }
    /// Version 2 reads version 1's shape (an upgrade), or its own (a later version's
    /// downgrade that kept it).
    fn read(old: OldState<'_>) -> Result<V1, String> {
        if is_down(&old) {
            if let Ok(s) = old.decode::<State>() {
                return Ok(s.to_v1());
            }
        }
        old.decode::<V1>().map_err(|e| e.to_string())
    }
}
