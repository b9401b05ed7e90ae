//! Host-owned dataframes: named key/value stores shared by contexts.
//!
//! Each dataframe has its own `RwLock` over its map (there is no global
//! lock), held only for the few instructions of one operation, never while
//! plugin code runs. Read-modify-write happens host-side ([`Dataframe::add`],
//! [`Dataframe::compare_and_swap`]) so concurrent writers lose nothing.
//!
//! A plugin that needs several operations to be seen at once takes a
//! *lease* ([`Dataframe::acquire`]): a logical read or write lock owned by
//! its instance id, not a host mutex, so plugin code never runs under a
//! host lock and the host can release a lease on the instance's behalf
//! ([`Dataframe::release_all`]) when the instance ends. Operations by other instances wait
//! for a conflicting lease up to their timeout and then fail with
//! [`HostError::Timeout`]; they never proceed unlocked.
//!
//! Fast path: one uncontended `RwLock` acquisition plus one atomic load of
//! the lease word; no allocation except to copy a returned value out or to
//! insert a new key.

use std::collections::HashMap as StdHashMap;

/// Dataframe maps hash keys with FxHash: keys are short strings chosen by
/// the deployment, not by an adversary, and SipHash was the largest single
/// cost of a get+set pair when profiled (see BENCHMARKS.md).
type HashMap<K, V> = StdHashMap<K, V, rustc_hash::FxBuildHasher>;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use otools_api::ffi::{CasOutcome, LockMode};
use otools_api::{HostError, Value};
use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Bit of the lease word marking a write lease; the low bits are the owner.
const WRITE: u64 = 1 << 63;

/// Identifies a running instance for leases. Never 0.
pub type OwnerId = u64;

/// A deadline for waiting on a lease; `None` waits as long as it takes.
pub type Deadline = Option<Instant>;

#[derive(Default)]
struct Leases {
    writer: OwnerId,
    readers: Vec<OwnerId>,
}

impl Leases {
    fn word(&self) -> u64 {
        if self.writer != 0 {
            WRITE | self.writer
        } else {
            self.readers.len() as u64
        }
    }

    fn allows(&self, me: OwnerId, write: bool) -> bool {
        if self.writer != 0 {
            return self.writer == me;
        }
        !write || self.readers.is_empty() || self.readers == [me]
    }
}

/// One dataframe.
pub struct Dataframe {
    name: String,
    map: RwLock<HashMap<String, Value>>,
    /// Mirror of `leases` readable without a lock: 0 = no lease.
    lease_word: AtomicU64,
    leases: Mutex<Leases>,
    lease_released: Condvar,
}

impl std::fmt::Debug for Dataframe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataframe")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn fast_allows(word: u64, me: OwnerId, write: bool) -> bool {
    word == 0 || (word & WRITE == 0 && !write) || word == WRITE | me
}

impl Dataframe {
    /// A dataframe holding `init`.
    pub fn new(
        name: impl Into<String>,
        init: impl IntoIterator<Item = (String, Value)>,
    ) -> Dataframe {
        Dataframe {
            name: name.into(),
            map: RwLock::new(init.into_iter().collect()),
            lease_word: AtomicU64::new(0),
            leases: Mutex::new(Leases::default()),
            lease_released: Condvar::new(),
        }
    }

    /// The dataframe's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn read_map(
        &self,
        deadline: Deadline,
    ) -> Result<RwLockReadGuard<'_, HashMap<String, Value>>, HostError> {
        match deadline {
            None => Ok(self.map.read()),
            Some(d) => self.map.try_read_until(d).ok_or(HostError::Timeout),
        }
    }

    fn write_map(
        &self,
        deadline: Deadline,
    ) -> Result<RwLockWriteGuard<'_, HashMap<String, Value>>, HostError> {
        match deadline {
            None => Ok(self.map.write()),
            Some(d) => self.map.try_write_until(d).ok_or(HostError::Timeout),
        }
    }

    /// Waits until `me` may operate, then runs `op` under the lease mutex (slow path).
    fn wait_lease<R>(
        &self,
        me: OwnerId,
        write: bool,
        deadline: Deadline,
        op: impl FnOnce() -> Result<R, HostError>,
    ) -> Result<R, HostError> {
        let mut leases = match deadline {
            None => self.leases.lock(),
            Some(d) => self.leases.try_lock_until(d).ok_or(HostError::Timeout)?,
        };
        while !leases.allows(me, write) {
            match deadline {
                None => self.lease_released.wait(&mut leases),
                Some(d) => {
                    if self.lease_released.wait_until(&mut leases, d).timed_out()
                        && !leases.allows(me, write)
                    {
                        return Err(HostError::Timeout);
                    }
                }
            }
        }
        // Leases cannot change while we hold their mutex.
        op()
    }

    fn with_read<R>(
        &self,
        me: OwnerId,
        deadline: Deadline,
        f: impl Fn(&HashMap<String, Value>) -> R,
    ) -> Result<R, HostError> {
        {
            let map = self.read_map(deadline)?;
            if fast_allows(self.lease_word.load(Ordering::Acquire), me, false) {
                return Ok(f(&map));
            }
        }
        self.wait_lease(me, false, deadline, || Ok(f(&*self.read_map(deadline)?)))
    }

    fn with_write<R>(
        &self,
        me: OwnerId,
        deadline: Deadline,
        f: impl FnOnce(&mut HashMap<String, Value>) -> R,
    ) -> Result<R, HostError> {
        let mut map = self.write_map(deadline)?;
        if fast_allows(self.lease_word.load(Ordering::Acquire), me, true) {
            return Ok(f(&mut map));
        }
        drop(map);
        self.wait_lease(me, true, deadline, || {
            Ok(f(&mut *self.write_map(deadline)?))
        })
    }

    /// The value under `key`, if any.
    pub fn get(
        &self,
        me: OwnerId,
        key: &str,
        deadline: Deadline,
    ) -> Result<Option<Value>, HostError> {
        self.with_read(me, deadline, |m| m.get(key).cloned())
    }

    /// Stores `value` under `key`.
    pub fn set(
        &self,
        me: OwnerId,
        key: &str,
        value: Value,
        deadline: Deadline,
    ) -> Result<(), HostError> {
        let old = self.with_write(me, deadline, |m| match m.get_mut(key) {
            Some(slot) => Some(std::mem::replace(slot, value)),
            None => {
                m.insert(key.to_owned(), value);
                None
            }
        })?;
        drop(old); // freed after the lock is released
        Ok(())
    }

    /// Removes `key`, returning its value.
    pub fn remove(
        &self,
        me: OwnerId,
        key: &str,
        deadline: Deadline,
    ) -> Result<Option<Value>, HostError> {
        self.with_write(me, deadline, |m| m.remove(key))
    }

    /// Adds `by` to the number under `key` (absent = 0) and returns the new value.
    /// Integers wrap on overflow; an integer plus a float is a float.
    pub fn add(
        &self,
        me: OwnerId,
        key: &str,
        by: &Value,
        deadline: Deadline,
    ) -> Result<Value, HostError> {
        self.with_write(me, deadline, |m| {
            let new = match (m.get(key), by) {
                (None, Value::Int(_) | Value::Float(_)) => by.clone(),
                (Some(Value::Int(a)), Value::Int(b)) => Value::Int(a.wrapping_add(*b)),
                #[expect(
                    clippy::cast_precision_loss,
                    reason = "int + float is a float, as in OTools"
                )]
                (Some(Value::Int(a)), Value::Float(b)) => Value::Float(*a as f64 + b),
                #[expect(clippy::cast_precision_loss, reason = "float + int is a float")]
                (Some(Value::Float(a)), Value::Int(b)) => Value::Float(a + *b as f64),
                (Some(Value::Float(a)), Value::Float(b)) => Value::Float(a + b),
                _ => return Err(HostError::WrongType),
            };
            match m.get_mut(key) {
                Some(slot) => *slot = new.clone(),
                None => {
                    m.insert(key.to_owned(), new.clone());
                }
            }
            Ok(new)
        })?
    }

    /// Replaces the value under `key` with `new` if it equals `expected` (None = absent).
    pub fn compare_and_swap(
        &self,
        me: OwnerId,
        key: &str,
        expected: Option<&Value>,
        new: Value,
        deadline: Deadline,
    ) -> Result<CasOutcome, HostError> {
        let (outcome, old) = self.with_write(me, deadline, |m| {
            if m.get(key) != expected {
                return (
                    CasOutcome {
                        swapped: false,
                        actual: m.get(key).cloned().into(),
                    },
                    None,
                );
            }
            let old = match m.get_mut(key) {
                Some(slot) => Some(std::mem::replace(slot, new)),
                None => {
                    m.insert(key.to_owned(), new);
                    None
                }
            };
            (
                CasOutcome {
                    swapped: true,
                    actual: None.into(),
                },
                old,
            )
        })?;
        drop(old);
        Ok(outcome)
    }

    /// All keys.
    pub fn keys(&self, me: OwnerId, deadline: Deadline) -> Result<Vec<String>, HostError> {
        self.with_read(me, deadline, |m| m.keys().cloned().collect())
    }

    /// Takes a read or write lease for `me`, waiting for conflicting ones.
    pub fn acquire(
        &self,
        me: OwnerId,
        mode: LockMode,
        deadline: Deadline,
    ) -> Result<(), HostError> {
        let mut leases = match deadline {
            None => self.leases.lock(),
            Some(d) => self.leases.try_lock_until(d).ok_or(HostError::Timeout)?,
        };
        if leases.writer == me || leases.readers.contains(&me) {
            return Err(HostError::LockState);
        }
        let write = mode == LockMode::Write;
        loop {
            let free = leases.writer == 0 && (!write || leases.readers.is_empty());
            if free {
                break;
            }
            match deadline {
                None => self.lease_released.wait(&mut leases),
                Some(d) => {
                    if self.lease_released.wait_until(&mut leases, d).timed_out()
                        && !(leases.writer == 0 && (!write || leases.readers.is_empty()))
                    {
                        return Err(HostError::Timeout);
                    }
                }
            }
        }
        if write {
            leases.writer = me;
        } else {
            leases.readers.push(me);
        }
        self.lease_word.store(leases.word(), Ordering::SeqCst);
        // Let operations that passed the fast-path check before the lease
        // existed finish; every later one sees the new lease word.
        drop(self.map.write());
        Ok(())
    }

    /// Releases a lease of `me`.
    pub fn release(&self, me: OwnerId, mode: LockMode) -> Result<(), HostError> {
        let mut leases = self.leases.lock();
        match mode {
            LockMode::Write if leases.writer == me => leases.writer = 0,
            LockMode::Read => match leases.readers.iter().position(|r| *r == me) {
                Some(i) => {
                    leases.readers.swap_remove(i);
                }
                None => return Err(HostError::LockState),
            },
            LockMode::Write => return Err(HostError::LockState),
        }
        self.lease_word.store(leases.word(), Ordering::SeqCst);
        drop(leases);
        self.lease_released.notify_all();
        Ok(())
    }

    /// Releases every lease `me` holds (its call ended or it was replaced).
    pub fn release_all(&self, me: OwnerId) {
        let _ = self.release(me, LockMode::Write);
        while self.release(me, LockMode::Read).is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn soon(ms: u64) -> Deadline {
        Some(Instant::now() + Duration::from_millis(ms))
    }

    #[test]
    fn absent_keys_read_as_none_and_set_round_trips() {
        let df = Dataframe::new("d", [("a".to_owned(), Value::from(1))]);
        assert_eq!(df.get(1, "a", None), Ok(Some(Value::from(1))));
        assert_eq!(df.get(1, "b", None), Ok(None));
        df.set(1, "b", Value::from("x"), None).unwrap();
        assert_eq!(df.get(1, "b", None), Ok(Some(Value::from("x"))));
    }

    #[test]
    fn add_and_cas_are_typed() {
        let df = Dataframe::new("d", []);
        assert_eq!(df.add(1, "n", &Value::Int(2), None), Ok(Value::Int(2)));
        assert_eq!(
            df.add(1, "n", &Value::Float(0.5), None),
            Ok(Value::Float(2.5))
        );
        df.set(1, "s", Value::from("x"), None).unwrap();
        assert_eq!(
            df.add(1, "s", &Value::Int(1), None),
            Err(HostError::WrongType)
        );
        let o = df
            .compare_and_swap(1, "k", None, Value::from(1), None)
            .unwrap();
        assert!(o.swapped);
        let o = df
            .compare_and_swap(1, "k", None, Value::from(2), None)
            .unwrap();
        assert!(!o.swapped);
        assert_eq!(o.actual.into_option(), Some(Value::from(1)));
    }

    #[test]
    fn a_write_lease_blocks_others_until_timeout_but_not_its_owner() {
        let df = Dataframe::new("d", []);
        df.acquire(7, LockMode::Write, None).unwrap();
        df.set(7, "k", Value::from(1), None).unwrap();
        assert_eq!(df.get(8, "k", soon(20)), Err(HostError::Timeout));
        assert_eq!(
            df.set(8, "k", Value::from(2), soon(20)),
            Err(HostError::Timeout)
        );
        assert_eq!(
            df.acquire(7, LockMode::Read, None),
            Err(HostError::LockState)
        );
        df.release(7, LockMode::Write).unwrap();
        assert_eq!(df.get(8, "k", soon(20)), Ok(Some(Value::from(1))));
    }

    #[test]
    fn a_read_lease_lets_others_read_but_not_write() {
        let df = Dataframe::new("d", []);
        df.acquire(7, LockMode::Read, None).unwrap();
        assert_eq!(df.get(8, "k", soon(20)), Ok(None));
        assert_eq!(
            df.set(8, "k", Value::from(1), soon(20)),
            Err(HostError::Timeout)
        );
        df.set(7, "k", Value::from(1), soon(20)).unwrap();
        df.release_all(7);
        df.set(8, "k", Value::from(2), soon(20)).unwrap();
    }

    #[test]
    fn a_waiting_writer_proceeds_when_the_lease_is_released() {
        let df = Arc::new(Dataframe::new("d", []));
        df.acquire(1, LockMode::Write, None).unwrap();
        let df2 = Arc::clone(&df);
        let t = std::thread::spawn(move || df2.add(2, "n", &Value::Int(1), None));
        df.set(1, "n", Value::Int(10), None).unwrap();
        df.release(1, LockMode::Write).unwrap();
        assert_eq!(t.join().unwrap(), Ok(Value::Int(11)));
    }

    #[test]
    fn concurrent_adds_lose_nothing() {
        let df = Arc::new(Dataframe::new("d", []));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let df = Arc::clone(&df);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        df.add(i + 1, "n", &Value::Int(1), None).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(df.get(9, "n", None), Ok(Some(Value::Int(40_000))));
    }
}
