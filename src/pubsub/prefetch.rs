//! Cache prefetch hints for the fan-out, and the crate's only `unsafe`.
//!
//! A broadcast to a big topic touches two cold cache lines per member: the
//! member's mailbox (its lock) and, on wake, its task's header (an atomic
//! state word). Each is reached through an atomic read-modify-write, which the
//! CPU does not overlap with the next member's misses, so a million members
//! cost two serialized memory round trips each. Asking for a batch of lines
//! ahead of time lets the misses overlap (`pubsub::hub`'s fan-out loop).
//!
//! This module owns the hint and nothing else: it must never read or write
//! through the pointers it is given. On targets other than x86_64 the hints
//! are no-ops (stable Rust has no portable prefetch), which costs speed only.
#![allow(unsafe_code)]

/// Ask for the cache line at `addr`, for writing (`PREFETCHW`). Any address
/// is fine, dangling or null included: a prefetch never faults.
#[inline(always)]
pub fn for_write(addr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHW is a hint. It reads and writes no program-visible
    // memory and cannot fault, whatever the address; `_mm_prefetch` is unsafe
    // only because of its `target_feature` attribute (SSE, which every
    // x86_64 target has).
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_ET0 }>(addr.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

#[cfg(test)]
mod tests {
    #[test]
    fn any_address_is_a_valid_hint() {
        super::for_write(std::ptr::null());
        super::for_write(usize::MAX as *const u8);
        let x = [0u8; 64];
        super::for_write(x.as_ptr());
        assert_eq!(x, [0u8; 64]);
    }
}
