//! Hot reload of a stage's library, spawn first and switch second, as for
//! a service. [`RunningPipeline::prepare_reload`] builds one instance of
//! the new version per worker of the stage and sets each up (on a
//! `reload-stage` thread, so a hung `setup` is given up on after the
//! stage's `startup_timeout` per worker: the instances it set up are then
//! fenced and dropped, not finalized) while the old instances keep
//! processing. Any failure (construction, `setup` error, panic or hang)
//! discards every new instance and leaves the stage on the old version.
//! [`StageReload::commit`] hands each worker its new instance; the worker
//! switches between two items: it finishes the item in hand with the old
//! instance, finalizes that, and takes its next item with the new one. So
//! every item is processed once, by one version; a worker waiting for
//! items switches once its next item is done. A worker that restarts in
//! between, or has finished, discards the instance handed to it (its
//! restart builds from the new version anyway).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use abi_stable::std_types::RResult;
use otools_abi::{FfiStageBox, WorkerInfo};
use parking_lot::Mutex;

use super::worker::reason;
use super::{RunningPipeline, worker_name};
use crate::event::Event;
use crate::instance::InstanceHost;
use crate::plugin::{Library, construct_stage};

/// One worker's new instance, set up.
pub(super) struct Prepared {
    pub(super) object: FfiStageBox,
    pub(super) host: Arc<InstanceHost>,
    pub(super) generation: u64,
}

/// What a `reload-stage` thread has set up so far: every new instance's
/// handle (fenced if the watcher gives up on the thread), and the workers
/// whose new version was journaled `reload_setup_ok`.
#[derive(Default)]
struct SetUp {
    hosts: Vec<Arc<InstanceHost>>,
    announced: Vec<crate::event::Unit>,
}

/// What a worker slot holds for a reload.
#[derive(Default)]
pub(super) struct Next {
    /// The instance to switch to.
    pub(super) prepared: Option<Prepared>,
    /// The worker has finished for good: nothing is handed to it any more.
    pub(super) closed: bool,
}

/// New instances for the workers of one stage, set up on a new version of
/// its library and not yet handed over: [`StageReload::commit`] or
/// [`StageReload::roll_back`].
pub struct StageReload {
    pipe: Arc<RunningPipeline>,
    s: usize,
    lib: Arc<Library>,
    file: String,
    prepared: Vec<(usize, Prepared)>,
}

impl RunningPipeline {
    /// The stages whose library is `path`, in a pipeline still running.
    pub fn stages_of_file(&self, path: &Path) -> Vec<usize> {
        if self.done() {
            return Vec::new();
        }
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let target = absolute(path);
        (0..self.stages.len())
            .filter(|s| absolute(&self.stages[*s].library.lock().path) == target)
            .collect()
    }

    /// Why `lib` cannot replace stage `s`'s library (it does not export the
    /// stage under its role), if it cannot.
    pub fn refuses_library(&self, s: usize, lib: &Library) -> Option<String> {
        let st = &self.stages[s];
        (lib.stage_role(&st.export) != Some(st.role)).then(|| {
            format!(
                "the new version has no {} `{}` (stage `{}` of pipeline `{}`)",
                st.role.name(),
                st.export,
                st.name,
                self.name()
            )
        })
    }

    /// Builds and sets up one instance of `lib` (from `file`) per worker
    /// of stage `s`, while the old ones keep working; the reason, naming
    /// the file, stage and worker, when one fails (the others are then
    /// finalized). Runs on a thread of its own, given up on once it
    /// overruns the stage's `startup_timeout` per worker.
    pub fn prepare_reload(
        self: &Arc<Self>,
        s: usize,
        lib: &Arc<Library>,
        file: &str,
    ) -> Result<StageReload, String> {
        let stage = &self.stages[s];
        let who = format!(
            "{file}: stage `{}` of pipeline `{}`",
            stage.name,
            self.name()
        );
        let workers = u32::try_from(stage.slots.len()).unwrap_or(u32::MAX);
        let budget = stage.policy.startup_timeout.saturating_mul(workers.max(1));
        // Set once the watcher stops waiting; the thread then drops what it
        // set up (fenced, not called again) instead of handing it over.
        let given_up = Arc::new(Mutex::new(false));
        let set_up: Arc<Mutex<SetUp>> = Arc::default();
        let (tx, rx) = mpsc::channel();
        let job = {
            let (me, lib, who) = (Arc::clone(self), Arc::clone(lib), who.clone());
            let (given_up, set_up) = (Arc::clone(&given_up), Arc::clone(&set_up));
            move || {
                let r = me.set_up_all(s, &lib, &who, &set_up);
                let given_up = given_up.lock();
                if !*given_up {
                    let _ = tx.send(r);
                } else if let Ok(prepared) = r {
                    for (_, p) in prepared {
                        p.host.fence();
                        super::worker::drop_object(p.object, &p.host);
                    }
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("reload-stage".into())
            .spawn(job)
        {
            return Err(format!("{who}: cannot start the reload: {e}"));
        }
        let outcome = rx.recv_timeout(budget).or_else(|_| {
            *given_up.lock() = true;
            // It may have answered just before.
            rx.try_recv()
        });
        match outcome {
            Ok(Ok(prepared)) => Ok(StageReload {
                pipe: Arc::clone(self),
                s,
                lib: Arc::clone(lib),
                file: file.to_owned(),
                prepared,
            }),
            Ok(Err(why)) => Err(why),
            Err(_) => {
                let mut set_up = set_up.lock();
                for host in &set_up.hosts {
                    host.fence();
                }
                // Their new instances will not serve.
                for unit in set_up.announced.drain(..) {
                    self.emit(Event::ReloadRolledBack {
                        unit,
                        file: file.to_owned(),
                    });
                }
                Err(format!(
                    "{who}: setup hung (no return within {})",
                    humantime::format_duration(budget)
                ))
            }
        }
    }

    /// The body of a `reload-stage` thread: a set-up new instance per
    /// worker still working, or why not (the ones set up are discarded).
    fn set_up_all(
        &self,
        s: usize,
        lib: &Arc<Library>,
        who: &str,
        set_up: &Mutex<SetUp>,
    ) -> Result<Vec<(usize, Prepared)>, String> {
        let stage = &self.stages[s];
        let file = lib.path.display().to_string();
        let mut prepared = Vec::new();
        for (w, slot) in stage.slots.iter().enumerate() {
            if slot.next.lock().closed {
                continue;
            }
            let generation = slot.control.lock().generation + 1;
            let host = Arc::new(InstanceHost::new(
                Arc::clone(&self.shared),
                worker_name(&stage.name, w),
                Arc::clone(lib),
                stage.export.clone(),
                generation,
                Arc::clone(&slot.stash),
            ));
            set_up.lock().hosts.push(Arc::clone(&host));
            let info = WorkerInfo {
                index: u32::try_from(w).unwrap_or(u32::MAX),
                count: u32::try_from(stage.slots.len()).unwrap_or(u32::MAX),
            };
            let failed = match construct_stage(lib, &stage.export, &stage.config_json) {
                Err(e) => Err(format!("construction failed: {}", e.message)),
                Ok(mut object) => match host.with_handle(|h| object.setup(h, info)) {
                    RResult::ROk(()) => {
                        let unit = self.unit_id(s, w, generation);
                        set_up.lock().announced.push(unit.clone());
                        self.emit(Event::ReloadSetupOk {
                            unit,
                            file: file.clone(),
                        });
                        prepared.push((
                            w,
                            Prepared {
                                object,
                                host,
                                generation,
                            },
                        ));
                        Ok(())
                    }
                    RResult::RErr(e) => {
                        host.fence();
                        super::worker::drop_object(object, &host);
                        Err(format!("setup {}", reason(&e)))
                    }
                },
            };
            if let Err(why) = failed {
                self.discard_all(s, prepared, &file);
                return Err(format!("{who}, worker {w}: {why}"));
            }
        }
        Ok(prepared)
    }

    /// Finalizes new instances that will not serve (a refused reload).
    fn discard_all(&self, s: usize, prepared: Vec<(usize, Prepared)>, file: &str) {
        for (w, p) in prepared {
            let unit = self.unit_id(s, w, p.generation);
            self.discard_instance(s, w, p);
            self.emit(Event::ReloadRolledBack {
                unit,
                file: file.to_owned(),
            });
        }
    }

    /// Finalizes a new instance that will not serve, and drops it.
    pub(super) fn discard_instance(&self, s: usize, w: usize, p: Prepared) {
        let Prepared {
            mut object,
            host,
            generation,
        } = p;
        match host.with_handle(|h| object.finalize(h)) {
            RResult::ROk(()) => self.emit(Event::Finalized {
                unit: self.unit_id(s, w, generation),
            }),
            RResult::RErr(e) => self.report(s, w, generation, &host, "finalize", &e),
        }
        host.fence();
        super::worker::drop_object(object, &host);
    }

    /// The instance a reload handed worker `w` of stage `s`, if any.
    pub(super) fn take_next(&self, s: usize, w: usize) -> Option<Prepared> {
        let slot = &self.stages[s].slots[w];
        let mut next = slot.next.lock();
        slot.has_next.store(false, Ordering::SeqCst);
        next.prepared.take()
    }

    /// Worker `w` of stage `s` starts an instance of its own (a restart)
    /// or has finished for good (`closing`): an instance a reload handed
    /// it is discarded.
    pub(super) fn drop_next(&self, s: usize, w: usize, closing: bool) {
        if closing {
            self.stages[s].slots[w].next.lock().closed = true;
        }
        if let Some(p) = self.take_next(s, w) {
            self.discard_instance(s, w, p);
        }
    }
}

impl StageReload {
    /// Hands each worker its new instance (it switches between two items)
    /// and makes the new version the stage's library (a restart builds
    /// from it); the number of instances handed over.
    pub fn commit(self) -> usize {
        let p = &self.pipe;
        let stage = &p.stages[self.s];
        *stage.library.lock() = Arc::clone(&self.lib);
        let mut handed = 0;
        for (w, prepared) in self.prepared {
            let slot = &stage.slots[w];
            let stale = {
                let mut next = slot.next.lock();
                let current = slot.control.lock().generation;
                if next.closed || current + 1 != prepared.generation {
                    Some(prepared)
                } else {
                    let old = next.prepared.replace(prepared);
                    slot.has_next.store(true, Ordering::SeqCst);
                    handed += 1;
                    old
                }
            };
            // A worker that restarted meanwhile builds from the new version.
            if let Some(stale) = stale {
                p.discard_instance(self.s, w, stale);
            }
        }
        tracing::info!(
            pipeline = %p.name(),
            "stage {}: {handed} worker(s) switch to {} at their next item",
            stage.name,
            self.file
        );
        handed
    }

    /// Discards the new instances: the stage stays on its old version.
    pub fn roll_back(self) {
        self.pipe.discard_all(self.s, self.prepared, &self.file);
    }
}
