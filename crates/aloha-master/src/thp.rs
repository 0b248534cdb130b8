//! Transparent huge pages off for the master's process, as databases advise.
//!
//! With THP, a fault in a region the allocator reserved may back a whole 2 MiB page, and a
//! region freed in part stays resident. After bursts of submissions the master then held far
//! more than it uses: the scale benchmark's master held 1,041 MiB after 150,000 apps submitted
//! in batches of 100 to 5,000 workers, and 745 MiB with THP off, at the same rate
//! (docs/benchmarks.md). `PR_SET_THP_DISABLE` applies to this process only (the system's
//! setting is untouched) and to every mapping faulted in after the call. The master starts no
//! programs, so nothing else inherits it. `MIMALLOC_ALLOW_THP=1` in the environment (the
//! allocator's own switch) leaves THP as the system has it.

/// Whether the environment asks to keep THP: `MIMALLOC_ALLOW_THP` set to 1, on, true or yes.
pub fn allowed(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "on" | "true" | "yes"
        )
    })
}

/// Turns THP off for this process unless `MIMALLOC_ALLOW_THP` allows it. Returns whether it
/// is off; a kernel without the call leaves it as it was.
pub fn disable_unless_allowed() -> bool {
    if allowed(std::env::var("MIMALLOC_ALLOW_THP").ok().as_deref()) {
        return false;
    }
    disable()
}

#[cfg(target_os = "linux")]
fn disable() -> bool {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn disable() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_explicit_yes_keeps_thp() {
        for v in ["1", "on", "TRUE", " yes "] {
            assert!(allowed(Some(v)), "{v}");
        }
        for v in [None, Some("0"), Some("off"), Some(""), Some("2")] {
            assert!(!allowed(v), "{v:?}");
        }
    }
}
