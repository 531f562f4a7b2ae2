// Version 1's state of the rel_srv fixtures (included after common/rel_srv.rs).

/// Version 1's state.
pub type State = V1;

impl V1 {
    fn from_v1(v: V1, _origin: &str) -> V1 {
        v
    }
    fn to_v1(&self) -> V1 {
        self.clone()
    }
    fn origin(&self) -> &'static str {
        "1"
    }
    /// Version 1 reads its own shape, and version 2's downgraded one (the same shape).
    fn read(old: OldState<'_>) -> Result<V1, String> {
        let _ = is_down(&old);
        old.decode().map_err(|e| e.to_string())
    }
}
