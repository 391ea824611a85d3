//! Load shedding: a global cap on requests in flight.
//!
//! Beyond the cap a request is answered 503 before any work is done, because
//! work admitted past what the machine can run only adds latency for
//! everyone. Admin and health requests may use a reserve above the cap, so an
//! operator can still see and fix an overloaded server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct LoadShedder {
    in_flight: AtomicUsize,
    cap: usize,
    reserve: usize,
}

/// Held while a request is in flight.
#[derive(Debug)]
pub struct InFlight {
    shedder: Arc<LoadShedder>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shedder.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LoadShedder {
    pub fn new(cap: usize, reserve: usize) -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            cap: cap.max(1),
            reserve,
        })
    }

    /// Admits a request, or `None` if it must be shed. `privileged` requests
    /// (admin, health) may also use the reserve.
    pub fn admit(self: &Arc<Self>, privileged: bool) -> Option<InFlight> {
        let limit = if privileged {
            self.cap + self.reserve
        } else {
            self.cap
        };
        let previous = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if previous >= limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlight {
            shedder: self.clone(),
        })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn cap(&self) -> usize {
        self.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_beyond_the_cap_but_keeps_a_reserve_for_operators() {
        let shedder = LoadShedder::new(2, 1);
        let a = shedder.admit(false).expect("1");
        let _b = shedder.admit(false).expect("2");
        assert!(shedder.admit(false).is_none(), "over the cap");
        let admin = shedder.admit(true).expect("reserve");
        assert!(shedder.admit(true).is_none(), "reserve used up");
        drop(admin);
        drop(a);
        assert!(shedder.admit(false).is_some());
        assert_eq!(shedder.in_flight(), 1);
    }
}
