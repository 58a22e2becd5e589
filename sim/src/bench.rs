//! Benchmarks of the simulator itself (filled in below).

/// `arbor-sim bench …`.
pub fn command<'a>(
    _args: &[String],
    _num: impl Fn(&str, u64) -> Result<u64, String>,
    _value: impl Fn(&str) -> Option<&'a str>,
) -> Result<bool, String> {
    Err("bench: not built yet".into())
}
