//! The executor: tasks in a per-thread table, woken through `Arc` wakers that carry the task's
//! index and generation. A wake on the runtime's own thread queues the task without a lock; a
//! wake from another thread goes through a mutex-guarded list and the ring's eventfd.
// The one lock: wakes from other threads (a JWKS refresh, a control message), never a wake on
// the runtime's own thread, so no request takes it.
#![allow(clippy::disallowed_types)]

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use super::reactor::{Builder, Reactor};

/// Identifies a runtime's thread in wakers (0 = none).
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The runtime running on this thread, if any.
    static CURRENT: RefCell<Option<Rc<Runtime>>> = const { RefCell::new(None) };
    /// This thread's owner id while a runtime runs on it.
    static OWNER: Cell<u64> = const { Cell::new(0) };
    /// Tasks woken on this thread: (index, generation).
    static READY: RefCell<VecDeque<(u32, u32)>> = const { RefCell::new(VecDeque::new()) };
}

/// Wakes from other threads.
pub(crate) struct Remote {
    owner: u64,
    queue: Mutex<Vec<(u32, u32)>>,
    /// Written when `queue` gains an entry; the ring watches it.
    pub(crate) eventfd: i32,
}

impl Remote {
    fn push(&self, id: (u32, u32)) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let first = q.is_empty();
        q.push(id);
        drop(q);
        if first {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd this runtime owns (closed
            // only after the last Remote is dropped).
            unsafe { libc::write(self.eventfd, &one as *const u64 as *const libc::c_void, 8) };
        }
    }

    pub(crate) fn take(&self) -> Vec<(u32, u32)> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // SAFETY: the eventfd was opened for this Remote and nothing else closes it.
        unsafe { libc::close(self.eventfd) };
    }
}

struct TaskWaker {
    id: (u32, u32),
    remote: Arc<Remote>,
}

impl TaskWaker {
    fn wake(&self) {
        // `try_with`: a wake from a thread-local's destructor at thread exit finds these gone
        // (the task's runtime is gone with them: nothing to wake).
        if OWNER.try_with(|o| o.get()).ok() == Some(self.remote.owner) {
            let _ = READY.try_with(|r| r.borrow_mut().push_back(self.id));
        } else {
            self.remote.push(self.id);
        }
    }
}

/// A task's waker: an `Arc<TaskWaker>` behind a vtable of the runtime's own, so that the
/// reactor and the timer wheel can tell one of this runtime's wakers from any other and keep
/// the task's id instead of a clone ([`Waiter`]).
static TASK_VTABLE: RawWakerVTable =
    RawWakerVTable::new(task_clone, task_wake, task_wake_by_ref, task_drop);

/// A task's waker for one poll, without a reference count of its own: it borrows the task's
/// `Arc` (the `ManuallyDrop` never runs the vtable's drop); a clone taken from it is a full
/// waker ([`task_clone`]).
fn borrowed_waker(w: &Arc<TaskWaker>) -> std::mem::ManuallyDrop<Waker> {
    // SAFETY: the pointer is the live `Arc<TaskWaker>`'s, which outlives the poll that uses
    // this waker; the waker is never dropped, so it never gives back a count it did not take.
    std::mem::ManuallyDrop::new(unsafe {
        Waker::from_raw(RawWaker::new(Arc::as_ptr(w) as *const (), &TASK_VTABLE))
    })
}

fn task_waker(w: Arc<TaskWaker>) -> Waker {
    // SAFETY: the pointer is an `Arc<TaskWaker>`'s, and the vtable's functions treat it as
    // that `Arc` (one strong count per waker).
    unsafe { Waker::from_raw(RawWaker::new(Arc::into_raw(w) as *const (), &TASK_VTABLE)) }
}

// SAFETY (the four below): `p` came from `Arc::into_raw` of an `Arc<TaskWaker>` whose strong
// count this waker holds (`task_waker`, `task_clone`).
unsafe fn task_clone(p: *const ()) -> RawWaker {
    unsafe { Arc::increment_strong_count(p as *const TaskWaker) };
    RawWaker::new(p, &TASK_VTABLE)
}

unsafe fn task_wake(p: *const ()) {
    let w = unsafe { Arc::from_raw(p as *const TaskWaker) };
    w.wake();
}

unsafe fn task_wake_by_ref(p: *const ()) {
    unsafe { &*(p as *const TaskWaker) }.wake();
}

unsafe fn task_drop(p: *const ()) {
    drop(unsafe { Arc::from_raw(p as *const TaskWaker) });
}

/// The task of this thread's runtime that `w` wakes, if it is one of its task wakers.
fn own_task(w: &Waker) -> Option<(u32, u32)> {
    if !std::ptr::eq(w.vtable(), &TASK_VTABLE) {
        return None;
    }
    // SAFETY: a waker with this vtable holds a live `Arc<TaskWaker>` pointer (`task_waker`).
    let tw = unsafe { &*(w.data() as *const TaskWaker) };
    (OWNER.with(|o| o.get()) == tw.remote.owner).then_some(tw.id)
}

/// Whom an operation or a timer wakes, as the reactor keeps it: a task of this runtime by its
/// id (no waker cloned, no reference count touched: a stale id is ignored when run), any other
/// waker cloned. 16 bytes, the size of a `Waker`: "nobody" is an id no task has.
pub struct Waiter(Who);

enum Who {
    Task(u32, u32),
    Other(Waker),
}

const NOBODY: (u32, u32) = (u32::MAX, u32::MAX);

impl Waiter {
    pub(crate) const NONE: Waiter = Waiter(Who::Task(NOBODY.0, NOBODY.1));

    pub(crate) fn of(w: &Waker) -> Waiter {
        match own_task(w) {
            Some((i, g)) => Waiter(Who::Task(i, g)),
            None => Waiter(Who::Other(w.clone())),
        }
    }

    /// Makes `w` the one to wake (unless it already is).
    pub(crate) fn set(&mut self, w: &Waker) {
        if let Who::Other(o) = &self.0 {
            if o.will_wake(w) {
                return;
            }
        }
        *self = Waiter::of(w);
    }

    pub(crate) fn is_none(&self) -> bool {
        matches!(self.0, Who::Task(i, g) if (i, g) == NOBODY)
    }

    pub(crate) fn take(&mut self) -> Waiter {
        std::mem::replace(self, Waiter::NONE)
    }

    /// Wakes it (on the runtime's thread: a task id goes straight to the ready queue).
    pub(crate) fn wake(self) {
        match self.0 {
            Who::Task(i, g) if (i, g) == NOBODY => {}
            Who::Task(i, g) => {
                let _ = READY.try_with(|r| r.borrow_mut().push_back((i, g)));
            }
            Who::Other(w) => w.wake(),
        }
    }
}

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = ()>>>;

struct Task {
    fut: RefCell<Option<BoxFuture>>,
    waker: Arc<TaskWaker>,
}

/// A task's place in the table. A slot whose task ended keeps its `Task` (future gone), so
/// that the next task spawned there reuses it and its waker when nothing else holds them: a
/// detached task (a connection's, an HTTP/2 stream's) costs one allocation, its future's,
/// where it took four (the future, its join state, the `Task`, the waker).
struct Slot {
    gen: u32,
    task: Option<Rc<Task>>,
}

pub(crate) struct Runtime {
    pub(crate) reactor: Reactor,
    tasks: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    pub(crate) remote: Arc<Remote>,
    /// The runtime is ending: spawned tasks are dropped, not run.
    closing: Cell<bool>,
}

/// Runs `f` with the runtime of this thread. Panics outside one (a programming error: every
/// shard task runs inside [`block_on`]).
pub(crate) fn with<R>(f: impl FnOnce(&Rc<Runtime>) -> R) -> R {
    CURRENT.with(|c| f(c.borrow().as_ref().expect("not inside a Tollgate runtime")))
}

/// [`with`], or `None` outside a runtime.
pub(crate) fn try_with<R>(f: impl FnOnce(&Rc<Runtime>) -> R) -> Option<R> {
    CURRENT.with(|c| c.borrow().as_ref().map(f))
}

impl Runtime {
    fn spawn_boxed(&self, fut: BoxFuture) {
        let mut tasks = self.tasks.borrow_mut();
        let idx = match self.free.borrow_mut().pop() {
            Some(i) => i,
            None => {
                tasks.push(Slot { gen: 0, task: None });
                (tasks.len() - 1) as u32
            }
        };
        let slot = &mut tasks[idx as usize];
        slot.gen = slot.gen.wrapping_add(1);
        let id = (idx, slot.gen);
        // The ended task's `Task` and waker are reused when no one else holds them (a waker
        // clone kept somewhere must go on naming the old id, which is then ignored).
        let reusable = slot
            .task
            .as_mut()
            .and_then(Rc::get_mut)
            .and_then(|t| Some((Arc::get_mut(&mut t.waker)?, t.fut.get_mut())));
        if let Some((w, f)) = reusable {
            w.id = id;
            *f = Some(fut);
        } else {
            slot.task = Some(Rc::new(Task {
                fut: RefCell::new(Some(fut)),
                waker: Arc::new(TaskWaker {
                    id,
                    remote: self.remote.clone(),
                }),
            }));
        }
        READY.with(|r| r.borrow_mut().push_back(id));
    }

    /// Polls one woken task; a stale wake (the slot was reused) is ignored.
    fn run(&self, (idx, gen): (u32, u32)) {
        let task = match self.tasks.borrow().get(idx as usize) {
            Some(s) if s.gen == gen => s.task.clone(),
            _ => None,
        };
        let Some(task) = task else { return };
        let mut fut = task.fut.borrow_mut();
        let Some(f) = fut.as_mut() else { return };
        let done = f
            .as_mut()
            .poll(&mut Context::from_waker(&borrowed_waker(&task.waker)))
            .is_ready();
        if done {
            // The slot keeps the `Task` for the next spawn; the future (and what it holds)
            // goes now. A wake with this id finds the future gone, then a new generation.
            let ended = fut.take();
            drop(fut);
            drop(ended);
            self.free.borrow_mut().push(idx);
        }
    }
}

/// Adds a task to this thread's runtime.
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let state = Rc::new(JoinState {
        out: RefCell::new(None),
        waiter: RefCell::new(None),
    });
    // A task spawned while the runtime ends (from a drop) never runs.
    if with(|rt| rt.closing.get()) {
        return JoinHandle { state };
    }
    let spawned = Spawned {
        fut,
        state: state.clone(),
    };
    with(|rt| rt.spawn_boxed(Box::pin(spawned)));
    JoinHandle { state }
}

/// Adds a task whose end no one awaits, already on the heap: no join state (the one
/// allocation is the future's, where [`spawn`] makes two).
pub fn spawn_detached(fut: BoxFuture) {
    with(|rt| {
        // A task spawned while the runtime ends (from a drop) never runs.
        if !rt.closing.get() {
            rt.spawn_boxed(fut);
        }
    });
}

pin_project_lite::pin_project! {
    /// A spawned future and where its output goes, polled in place. (An `async` block
    /// awaiting the future would hold it twice, captured and awaited: a connection's task
    /// took 2.3 KB instead of 1.2.)
    struct Spawned<F: Future> {
        #[pin]
        fut: F,
        state: Rc<JoinState<F::Output>>,
    }
}

impl<F: Future> Future for Spawned<F> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let Poll::Ready(out) = this.fut.poll(cx) else {
            return Poll::Pending;
        };
        *this.state.out.borrow_mut() = Some(out);
        if let Some(w) = this.state.waiter.borrow_mut().take() {
            w.wake();
        }
        Poll::Ready(())
    }
}

struct JoinState<T> {
    out: RefCell<Option<T>>,
    waiter: RefCell<Option<Waker>>,
}

/// A spawned task's result; dropping it detaches the task.
pub struct JoinHandle<T> {
    state: Rc<JoinState<T>>,
}

impl<T> Future for JoinHandle<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.state.out.borrow_mut().take() {
            Some(v) => Poll::Ready(v),
            None => {
                *self.state.waiter.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Clears this thread's runtime when `block_on` returns or unwinds.
struct Enter;

impl Drop for Enter {
    fn drop(&mut self) {
        let rt = CURRENT.with(|c| c.borrow().clone());
        if let Some(rt) = &rt {
            // Tasks may hold operations: drop them while the runtime is still this thread's
            // (a drop may spawn, or close through the ring) and the reactor still exists (their
            // buffers move into it), then the reactor waits for the kernel to let go.
            rt.closing.set(true);
            let tasks = std::mem::take(&mut *rt.tasks.borrow_mut());
            drop(tasks);
            rt.reactor.shutdown();
        }
        CURRENT.with(|c| c.borrow_mut().take());
        READY.with(|r| r.borrow_mut().clear());
        OWNER.with(|o| o.set(0));
    }
}

/// Builds a runtime on this thread and runs `main` to completion (tasks it spawned and left
/// running are dropped when it returns).
pub fn block_on<F: Future>(builder: Builder, main: F) -> io::Result<F::Output> {
    if CURRENT.with(|c| c.borrow().is_some()) {
        return Err(io::Error::other(
            "a Tollgate runtime already runs on this thread",
        ));
    }
    if !super::probe::supported() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "Tollgate's runtime needs Linux 6.0 or later with io_uring allowed \
             (multishot receive, provided-buffer rings)",
        ));
    }
    // SAFETY: eventfd takes no pointers.
    let eventfd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if eventfd < 0 {
        return Err(io::Error::last_os_error());
    }
    let owner = NEXT_OWNER.fetch_add(1, Ordering::Relaxed);
    let remote = Arc::new(Remote {
        owner,
        queue: Mutex::new(Vec::new()),
        eventfd,
    });
    let reactor = Reactor::new(&builder, eventfd)?;
    let rt = Rc::new(Runtime {
        reactor,
        tasks: RefCell::new(Vec::new()),
        free: RefCell::new(Vec::new()),
        remote: remote.clone(),
        closing: Cell::new(false),
    });
    CURRENT.with(|c| *c.borrow_mut() = Some(rt.clone()));
    OWNER.with(|o| o.set(owner));
    let _enter = Enter;

    // The main future is polled when its own waker fires (an id no task slot uses).
    const MAIN: (u32, u32) = (u32::MAX, 0);
    let main_waker = task_waker(Arc::new(TaskWaker {
        id: MAIN,
        remote: remote.clone(),
    }));
    let mut main = std::pin::pin!(main);
    let mut main_woken = true;
    loop {
        if main_woken {
            main_woken = false;
            if let Poll::Ready(v) = main.as_mut().poll(&mut Context::from_waker(&main_waker)) {
                return Ok(v);
            }
        }
        // Run what is ready; a bounded batch, so that completions are reaped between batches.
        let mut budget = 256;
        while budget > 0 {
            let Some(id) = READY.with(|r| r.borrow_mut().pop_front()) else {
                break;
            };
            budget -= 1;
            if id == MAIN {
                main_woken = true;
            } else {
                rt.run(id);
            }
        }
        let idle = !main_woken && READY.with(|r| r.borrow().is_empty());
        rt.reactor.turn(idle)?;
        for id in remote.take() {
            READY.with(|r| r.borrow_mut().push_back(id));
        }
    }
}
