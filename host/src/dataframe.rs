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
//! A write by a fenced instance (one replaced while it waited for a lease
//! or for the map lock) is refused under the map lock, right before it
//! would become visible ([`Caller`]), so a stale instance never writes after
//! its replacement served.
//!
//! A value a plugin built frees itself through the plugin's code, so every
//! value an operation takes (the new value of a set or of a
//! compare-and-swap, the value it replaces) is dropped after every host
//! lock is released, including when the operation fails or times out: the
//! closures that run under a lock only borrow it.
//!
//! Fast path: one uncontended `RwLock` acquisition plus one atomic load of
//! the lease word (and one of the caller's fence for a write); no
//! allocation except to copy a returned value out or to insert a new key.

use std::collections::HashMap as StdHashMap;

/// Dataframe maps hash keys with FxHash: keys are short strings chosen by
/// the deployment, not by an adversary, and SipHash was the largest single
/// cost of a get+set pair when profiled (see BENCHMARKS.md).
type HashMap<K, V> = StdHashMap<K, V, rustc_hash::FxBuildHasher>;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use otools_abi::LockMode;
use otools_abi::{HostError, Value};
use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Bit of the lease word marking a write lease; the low bits are the owner.
const WRITE: u64 = 1 << 63;

/// Identifies a running instance for leases. Never 0.
pub type OwnerId = u64;

/// A deadline for waiting on a lease; `None` waits as long as it takes.
pub type Deadline = Option<Instant>;

/// Who performs an operation: the lease owner, and the instance's fence
/// flag if it can be fenced. A plain [`OwnerId`] converts into a caller that
/// is never fenced.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    id: OwnerId,
    fence: Option<&'a AtomicBool>,
}

impl<'a> Caller<'a> {
    /// The caller `id`, whose writes are refused once `fence` is set.
    pub fn fenced_by(id: OwnerId, fence: &'a AtomicBool) -> Caller<'a> {
        Caller {
            id,
            fence: Some(fence),
        }
    }

    fn is_fenced(&self) -> bool {
        self.fence.is_some_and(|f| f.load(Ordering::Acquire))
    }
}

impl From<OwnerId> for Caller<'static> {
    fn from(id: OwnerId) -> Caller<'static> {
        Caller { id, fence: None }
    }
}

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

/// One dataframe. The values are [`Value`]s; the type parameter lets the
/// unit tests store a value whose drop they can observe.
pub struct Dataframe<V = Value> {
    name: String,
    map: RwLock<HashMap<String, V>>,
    /// Mirror of `leases` readable without a lock: 0 = no lease.
    lease_word: AtomicU64,
    leases: Mutex<Leases>,
    lease_released: Condvar,
}

impl<V> std::fmt::Debug for Dataframe<V> {
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
        Dataframe::holding(name, init)
    }

    /// Adds `by` to the number under `key` (absent = 0) and returns the new
    /// value. An integer plus an integer is an integer, refused with
    /// [`HostError::WrongType`] if it overflows `i64`; adding an integer to a
    /// float key is refused too (an integer increment is exact, a float sum
    /// is not: use a float `by`); an integer plus a float is a float. A
    /// refused addition stores nothing.
    pub fn add<'f>(
        &self,
        me: impl Into<Caller<'f>>,
        key: &str,
        by: &Value,
        deadline: Deadline,
    ) -> Result<Value, HostError> {
        self.with_write(me.into(), deadline, |m| {
            let new = match (m.get(key), by) {
                (None, Value::Int(_) | Value::Float(_)) => by.clone(),
                (Some(Value::Int(a)), Value::Int(b)) => {
                    Value::Int(a.checked_add(*b).ok_or(HostError::WrongType)?)
                }
                #[expect(
                    clippy::cast_precision_loss,
                    reason = "int + float is a float, as in OTools"
                )]
                (Some(Value::Int(a)), Value::Float(b)) => Value::Float(*a as f64 + b),
                (Some(Value::Float(a)), Value::Float(b)) => Value::Float(a + b),
                _ => return Err(HostError::WrongType),
            };
            // The value replaced is a number: dropping it runs no plugin code.
            match m.get_mut(key) {
                Some(slot) => *slot = new.clone(),
                None => {
                    m.insert(key.to_owned(), new.clone());
                }
            }
            Ok(new)
        })?
    }
}

impl<V: Clone + PartialEq> Dataframe<V> {
    /// A dataframe holding `init`, of any value type.
    fn holding(
        name: impl Into<String>,
        init: impl IntoIterator<Item = (String, V)>,
    ) -> Dataframe<V> {
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
    ) -> Result<RwLockReadGuard<'_, HashMap<String, V>>, HostError> {
        match deadline {
            None => Ok(self.map.read()),
            Some(d) => self.map.try_read_until(d).ok_or(HostError::Timeout),
        }
    }

    fn write_map(
        &self,
        deadline: Deadline,
    ) -> Result<RwLockWriteGuard<'_, HashMap<String, V>>, HostError> {
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
        f: impl Fn(&HashMap<String, V>) -> R,
    ) -> Result<R, HostError> {
        {
            let map = self.read_map(deadline)?;
            if fast_allows(self.lease_word.load(Ordering::Acquire), me, false) {
                return Ok(f(&map));
            }
        }
        self.wait_lease(me, false, deadline, || Ok(f(&*self.read_map(deadline)?)))
    }

    /// Runs `f` under the map's write lock once `me` may write. A fenced
    /// caller is refused under that lock, right before `f` would write: a
    /// replacement's writes take the same lock after the fence was set, so
    /// a stale write can never follow them.
    fn with_write<R>(
        &self,
        me: Caller<'_>,
        deadline: Deadline,
        f: impl FnOnce(&mut HashMap<String, V>) -> R,
    ) -> Result<R, HostError> {
        let unless_fenced = |map: &mut HashMap<String, V>| {
            if me.is_fenced() {
                Err(HostError::Fenced)
            } else {
                Ok(f(map))
            }
        };
        let mut map = self.write_map(deadline)?;
        if fast_allows(self.lease_word.load(Ordering::Acquire), me.id, true) {
            return unless_fenced(&mut map);
        }
        drop(map);
        self.wait_lease(me.id, true, deadline, || {
            unless_fenced(&mut *self.write_map(deadline)?)
        })
    }

    /// The value under `key`, if any.
    pub fn get(&self, me: OwnerId, key: &str, deadline: Deadline) -> Result<Option<V>, HostError> {
        self.with_read(me, deadline, |m| m.get(key).cloned())
    }

    /// Stores `value` under `key`.
    pub fn set<'f>(
        &self,
        me: impl Into<Caller<'f>>,
        key: &str,
        value: V,
        deadline: Deadline,
    ) -> Result<(), HostError> {
        // The closure only borrows the value: if it never runs (a timeout,
        // a fenced caller), the value is still ours to drop below.
        let mut value = Some(value);
        let old = self.with_write(me.into(), deadline, |m| {
            let new = value.take()?;
            match m.get_mut(key) {
                Some(slot) => Some(std::mem::replace(slot, new)),
                None => {
                    m.insert(key.to_owned(), new);
                    None
                }
            }
        });
        // Freed after every lock is released: the value replaced, or the
        // new one if the write failed.
        drop(value);
        old.map(drop)
    }

    /// Removes `key`, returning its value.
    pub fn remove<'f>(
        &self,
        me: impl Into<Caller<'f>>,
        key: &str,
        deadline: Deadline,
    ) -> Result<Option<V>, HostError> {
        self.with_write(me.into(), deadline, |m| m.remove(key))
    }

    /// Replaces the value under `key` with `new` if it equals `expected`
    /// (None = absent): `Ok(())` if it did, else `Err` with the value found.
    pub fn compare_and_swap<'f>(
        &self,
        me: impl Into<Caller<'f>>,
        key: &str,
        expected: Option<&V>,
        new: V,
        deadline: Deadline,
    ) -> Result<Result<(), Option<V>>, HostError> {
        // As in `set`: the closure only borrows `new`, so a failed swap
        // drops it below, after the locks, not under them.
        let mut new = Some(new);
        let result = self.with_write(me.into(), deadline, |m| {
            let current = m.get(key);
            let taken = if current == expected {
                new.take()
            } else {
                None
            };
            let Some(new) = taken else {
                return (Err(current.cloned()), None);
            };
            let old = match m.get_mut(key) {
                Some(slot) => Some(std::mem::replace(slot, new)),
                None => {
                    m.insert(key.to_owned(), new);
                    None
                }
            };
            (Ok(()), old)
        });
        drop(new);
        let (outcome, old) = result?;
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
        assert_eq!(
            df.compare_and_swap(1, "k", None, Value::from(1), None),
            Ok(Ok(()))
        );
        assert_eq!(
            df.compare_and_swap(1, "k", None, Value::from(2), None),
            Ok(Err(Some(Value::from(1))))
        );
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
    fn an_integer_increment_of_a_float_key_is_refused_and_stores_nothing() {
        let df = Dataframe::new("d", [("f".to_owned(), Value::Float(1.5))]);
        assert_eq!(
            df.add(1, "f", &Value::Int(1), None),
            Err(HostError::WrongType)
        );
        assert_eq!(df.get(1, "f", None), Ok(Some(Value::Float(1.5))));
        // A float addition to it still works.
        assert_eq!(
            df.add(1, "f", &Value::Float(1.0), None),
            Ok(Value::Float(2.5))
        );
    }

    #[test]
    fn an_increment_past_i64_max_is_refused_and_stores_nothing() {
        let df = Dataframe::new("d", [("n".to_owned(), Value::Int(i64::MAX - 1))]);
        assert_eq!(
            df.add(1, "n", &Value::Int(1), None),
            Ok(Value::Int(i64::MAX))
        );
        assert_eq!(
            df.add(1, "n", &Value::Int(1), None),
            Err(HostError::WrongType)
        );
        assert_eq!(df.get(1, "n", None), Ok(Some(Value::Int(i64::MAX))));
        df.set(1, "m", Value::Int(i64::MIN), None).unwrap();
        assert_eq!(
            df.add(1, "m", &Value::Int(-1), None),
            Err(HostError::WrongType)
        );
        assert_eq!(df.get(1, "m", None), Ok(Some(Value::Int(i64::MIN))));
    }

    #[test]
    fn a_write_fenced_while_it_waited_for_a_lease_is_refused_when_the_lease_is_granted() {
        let df = Arc::new(Dataframe::new("d", []));
        let fence = Arc::new(AtomicBool::new(false));
        df.acquire(1, LockMode::Write, None).unwrap();
        let (df2, fence2) = (Arc::clone(&df), Arc::clone(&fence));
        let stale = std::thread::spawn(move || {
            df2.set(
                Caller::fenced_by(2, &fence2),
                "k",
                Value::from("stale"),
                None,
            )
        });
        // Fenced, whether it is already waiting or not yet: the outcome is the same.
        fence.store(true, Ordering::SeqCst);
        df.set(1, "k", Value::from("fresh"), None).unwrap();
        df.release(1, LockMode::Write).unwrap();
        assert_eq!(stale.join().unwrap(), Err(HostError::Fenced));
        assert_eq!(df.get(3, "k", None), Ok(Some(Value::from("fresh"))));
    }

    /// A value that records, when dropped, whether the dataframe in
    /// [`WATCHED`] had its map lock or its lease mutex held at that moment:
    /// the observable stand-in for a plugin-built value, whose drop runs
    /// plugin code.
    #[derive(Debug, Clone, PartialEq)]
    struct Probe(u32);

    thread_local! {
        static WATCHED: std::cell::RefCell<std::sync::Weak<Dataframe<Probe>>> =
            const { std::cell::RefCell::new(std::sync::Weak::new()) };
        static DROPS: std::cell::RefCell<Vec<(u32, bool)>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            let Some(df) = WATCHED.with(|w| w.borrow().upgrade()) else {
                return;
            };
            let locked = df.map.try_read().is_none() || df.leases.try_lock().is_none();
            DROPS.with(|d| d.borrow_mut().push((self.0, locked)));
        }
    }

    fn drops() -> Vec<(u32, bool)> {
        DROPS.with(|d| std::mem::take(&mut *d.borrow_mut()))
    }

    #[test]
    fn values_an_operation_takes_are_dropped_after_its_locks_are_released() {
        let df = Arc::new(Dataframe::holding("d", [("k".to_owned(), Probe(1))]));
        WATCHED.with(|w| *w.borrow_mut() = Arc::downgrade(&df));
        // How probe `id` was dropped: one entry per drop, true = under a lock.
        let dropped = |id: u32| -> Vec<bool> {
            drops()
                .into_iter()
                .filter(|d| d.0 == id)
                .map(|d| d.1)
                .collect()
        };

        // A failed compare-and-swap (fast path: the map lock).
        let r = df.compare_and_swap(7, "k", Some(&Probe(0)), Probe(2), None);
        assert_eq!(r, Ok(Err(Some(Probe(1)))));
        assert_eq!(dropped(2), [false], "the new value of a failed swap");

        // A failed compare-and-swap by a read-lease holder (slow path: the
        // lease mutex and the map lock).
        df.acquire(7, LockMode::Read, None).unwrap();
        let r = df.compare_and_swap(7, "k", Some(&Probe(0)), Probe(3), None);
        assert_eq!(r, Ok(Err(Some(Probe(1)))));
        assert_eq!(
            dropped(3),
            [false],
            "the new value of a failed swap under a lease"
        );
        df.release(7, LockMode::Read).unwrap();

        // A set that times out on another instance's lease.
        df.acquire(8, LockMode::Write, None).unwrap();
        assert_eq!(df.set(7, "k", Probe(4), soon(10)), Err(HostError::Timeout));
        assert_eq!(dropped(4), [false], "the value of a timed-out set");
        df.release(8, LockMode::Write).unwrap();

        // A set by a fenced instance.
        let fenced = AtomicBool::new(true);
        let r = df.set(Caller::fenced_by(7, &fenced), "k", Probe(5), None);
        assert_eq!(r, Err(HostError::Fenced));
        assert_eq!(dropped(5), [false], "the value of a refused set");

        // A set that succeeds drops the value it replaces.
        df.set(7, "k", Probe(6), None).unwrap();
        assert_eq!(dropped(1), [false], "the replaced value");
        WATCHED.with(|w| *w.borrow_mut() = std::sync::Weak::new());
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
