//! One-shot callbacks stored without a heap allocation when they are small.
//!
//! `Box<dyn FnOnce(&A)>` allocates for every closure that captures anything, and the loop's
//! callback queues and timer table hold one such callback per entry: scheduling a million
//! timers that each capture an `Rc` is a million `malloc`/`free` pairs, and running them in
//! deadline order touches a million scattered heap blocks. [`InlineFnOnce`] keeps a closure
//! of up to [`INLINE_BYTES`] bytes (with at most pointer alignment) inside itself and boxes
//! only larger ones; [`InlineSendFnOnce`] is the same for closures sent from other threads.
//!
//! The unsafe code lives here, in `ioloop-sys`, because the reactor crate forbids `unsafe`.
//!
//! # Examples
//!
//! ```
//! use std::cell::Cell;
//! use std::rc::Rc;
//! use ioloop_sys::inline_fn::InlineFnOnce;
//!
//! let total = Rc::new(Cell::new(0));
//! let t = total.clone();
//! let f = InlineFnOnce::<i32>::new(move |x: &i32| t.set(t.get() + *x));
//! assert!(f.is_inline()); // an `Rc` fits: no allocation
//! f.call(&5);
//! assert_eq!(total.get(), 5);
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::mem::{align_of, size_of, ManuallyDrop, MaybeUninit};

/// How many bytes of captured state a closure may have and still be stored inline.
pub const INLINE_BYTES: usize = 2 * size_of::<usize>();

/// The inline storage: two pointer-sized, pointer-aligned words.
type Storage = MaybeUninit<[usize; 2]>;

/// What to do with the stored closure: call it (consuming it) or drop it.
struct VTable<A: ?Sized + 'static> {
    /// Moves the closure out of the storage and calls it.
    ///
    /// Safety: the storage holds a live closure of the type this table was made for; it is
    /// moved out, so the storage must not be used again.
    call: unsafe fn(*mut Storage, &A),
    /// Drops the closure in place.
    ///
    /// Safety: as for `call`.
    drop: unsafe fn(*mut Storage),
    /// Whether the closure is in the storage itself (else the storage holds a `Box` of it).
    inline: bool,
}

/// Whether `F` fits the inline storage.
const fn fits<F>() -> bool {
    size_of::<F>() <= size_of::<Storage>() && align_of::<F>() <= align_of::<Storage>()
}

/// The vtables for a closure type `F` stored inline or boxed.
struct Tables<F, A: ?Sized>(PhantomData<fn(F, &A)>);

impl<F: FnOnce(&A), A: ?Sized + 'static> Tables<F, A> {
    const INLINE: VTable<A> = VTable {
        call: Self::call_inline,
        drop: Self::drop_inline,
        inline: true,
    };
    const BOXED: VTable<A> = VTable {
        call: Self::call_boxed,
        drop: Self::drop_boxed,
        inline: false,
    };

    /// Safety: `s` holds a live `F` written by [`Raw::new`] (inline case).
    unsafe fn call_inline(s: *mut Storage, a: &A) {
        // SAFETY: the caller guarantees an `F` is there and is not used again: moving it out
        // transfers ownership to this frame (dropped here if it panics).
        let f = unsafe { s.cast::<F>().read() };
        f(a);
    }

    /// Safety: as for `call_inline`.
    unsafe fn drop_inline(s: *mut Storage) {
        // SAFETY: the caller guarantees a live `F` is there and is not used again.
        unsafe { s.cast::<F>().drop_in_place() };
    }

    /// Safety: `s` holds a pointer from `Box::<F>::into_raw` written by [`Raw::new`].
    unsafe fn call_boxed(s: *mut Storage, a: &A) {
        // SAFETY: the caller guarantees the pointer came from `Box::into_raw` and is not used
        // again, so rebuilding the box takes sole ownership.
        let f = unsafe { Box::from_raw(s.cast::<*mut F>().read()) };
        f(a);
    }

    /// Safety: as for `call_boxed`.
    unsafe fn drop_boxed(s: *mut Storage) {
        // SAFETY: as in `call_boxed`.
        drop(unsafe { Box::from_raw(s.cast::<*mut F>().read()) });
    }
}

/// The type-erased closure shared by both public types.
struct Raw<A: ?Sized + 'static> {
    storage: Storage,
    vtable: &'static VTable<A>,
    /// Neither `Send` nor `Sync`: the closure may hold an `Rc`; [`InlineSendFnOnce`] opts in.
    _local: PhantomData<*const ()>,
}

impl<A: ?Sized + 'static> Raw<A> {
    #[inline]
    fn new<F: FnOnce(&A)>(f: F) -> Self {
        let mut storage = Storage::uninit();
        let vtable = if fits::<F>() {
            // SAFETY: `fits` checked that an `F` fits the storage's size and alignment.
            unsafe { storage.as_mut_ptr().cast::<F>().write(f) };
            &Tables::<F, A>::INLINE
        } else {
            let p = Box::into_raw(Box::new(f));
            // SAFETY: the storage is pointer-sized and pointer-aligned (two `usize`s).
            unsafe { storage.as_mut_ptr().cast::<*mut F>().write(p) };
            &Tables::<F, A>::BOXED
        };
        Self {
            storage,
            vtable,
            _local: PhantomData,
        }
    }

    #[inline]
    fn call(self, a: &A) {
        let mut this = ManuallyDrop::new(self);
        let call = this.vtable.call;
        // SAFETY: `vtable` was chosen in `new` for the closure the storage holds; `this` is
        // never dropped, so the closure moved out by `call` is not used again.
        unsafe { call(&mut this.storage, a) }
    }
}

impl<A: ?Sized + 'static> Drop for Raw<A> {
    fn drop(&mut self) {
        // SAFETY: the storage holds the closure `vtable` was chosen for (`call` consumes
        // `self` without running this), and it is not used after this.
        unsafe { (self.vtable.drop)(&mut self.storage) }
    }
}

/// A one-shot callback taking `&A`, stored inline when it captures at most
/// [`INLINE_BYTES`] bytes (else boxed). Not `Send`: see [`InlineSendFnOnce`].
///
/// `InlineFnOnce<A>` does what `Box<dyn FnOnce(&A)>` does, without the allocation for small
/// closures; it is three words where the box is two.
pub struct InlineFnOnce<A: ?Sized + 'static> {
    raw: Raw<A>,
}

impl<A: ?Sized + 'static> InlineFnOnce<A> {
    /// Stores `f`: inline if it fits, else in a `Box`.
    #[inline]
    pub fn new(f: impl FnOnce(&A) + 'static) -> Self {
        Self { raw: Raw::new(f) }
    }
}

/// [`InlineFnOnce`] for closures that are `Send`: what another thread hands to a loop.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use ioloop_sys::inline_fn::InlineSendFnOnce;
///
/// let hits = Arc::new(AtomicUsize::new(0));
/// let h = hits.clone();
/// let f = InlineSendFnOnce::<()>::new(move |_: &()| {
///     h.fetch_add(1, Ordering::Relaxed);
/// });
/// std::thread::spawn(move || f.call(&())).join().unwrap();
/// assert_eq!(hits.load(Ordering::Relaxed), 1);
/// ```
///
/// It is `Send` but not `Sync` (like `Box<dyn FnOnce(&A) + Send>`): it is moved, never shared.
pub struct InlineSendFnOnce<A: ?Sized + 'static> {
    raw: Raw<A>,
}

// SAFETY: `new` only accepts `Send` closures, and the rest of `Raw` (a `&'static` to a table of
// plain functions) is `Send`; `Raw`'s marker only stands for the closure it may hold.
unsafe impl<A: ?Sized + 'static> Send for InlineSendFnOnce<A> {}

impl<A: ?Sized + 'static> InlineSendFnOnce<A> {
    /// Stores `f`: inline if it fits, else in a `Box`.
    #[inline]
    pub fn new(f: impl FnOnce(&A) + Send + 'static) -> Self {
        Self { raw: Raw::new(f) }
    }
}

/// What both public types share: `call`, `is_inline` and `Debug`.
macro_rules! shared_methods {
    ($name:ident) => {
        impl<A: ?Sized + 'static> $name<A> {
            /// Calls the closure, consuming it.
            #[inline]
            pub fn call(self, a: &A) {
                self.raw.call(a);
            }

            /// Whether the closure is stored inline (no heap allocation).
            pub fn is_inline(&self) -> bool {
                self.raw.vtable.inline
            }
        }

        impl<A: ?Sized + 'static> fmt::Debug for $name<A> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("inline", &self.is_inline())
                    .finish_non_exhaustive()
            }
        }
    };
}

shared_methods!(InlineFnOnce);
shared_methods!(InlineSendFnOnce);

impl<A: ?Sized + 'static> From<InlineSendFnOnce<A>> for InlineFnOnce<A> {
    /// A `Send` callback is also a local one (no allocation, no copy of the closure's box).
    fn from(f: InlineSendFnOnce<A>) -> Self {
        Self { raw: f.raw }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    /// Counts its drops.
    struct Probe(Rc<Cell<u32>>);
    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn small_closures_are_inline_large_ones_boxed() {
        let zst = InlineFnOnce::<()>::new(|_| {});
        assert!(zst.is_inline());
        let two = (Rc::new(1u8), Rc::new(2u8));
        let f = InlineFnOnce::<()>::new(move |_| drop(two));
        assert!(f.is_inline());
        let big = [7u64; 3];
        let g = InlineFnOnce::<()>::new(move |_| assert_eq!(big, [7; 3]));
        assert!(!g.is_inline());
        // Over-aligned state is boxed even when it is small.
        #[repr(align(32))]
        struct Aligned(u8);
        let a = Aligned(3);
        let h = InlineFnOnce::<()>::new(move |_| {
            let a = a; // the whole value, not just the field (disjoint capture)
            assert_eq!(a.0, 3);
        });
        assert!(!h.is_inline());
        for f in [zst, f, g, h] {
            f.call(&());
        }
    }

    #[test]
    fn call_passes_the_argument_and_moves_captures() {
        for extra in [0usize, 3] {
            let out = Rc::new(RefCell::new(Vec::new()));
            let o = out.clone();
            let pad = vec![0u64; extra];
            let big = [1u64; 4];
            let f = InlineFnOnce::<str>::new(move |s: &str| {
                o.borrow_mut()
                    .push(format!("{s}{}{}", pad.len(), big.len()));
            });
            f.call("x");
            assert_eq!(*out.borrow(), [format!("x{extra}4")]);
            assert_eq!(
                Rc::strong_count(&out),
                1,
                "the capture was dropped after the call"
            );
        }
    }

    #[test]
    fn dropped_uncalled_drops_captures_once() {
        let drops = Rc::new(Cell::new(0));
        let p = Probe(drops.clone());
        drop(InlineFnOnce::<()>::new(move |_| drop(p)));
        assert_eq!(drops.get(), 1);
        let p = Probe(drops.clone());
        let big = [0u64; 4];
        drop(InlineFnOnce::<()>::new(move |_| drop((p, big))));
        assert_eq!(drops.get(), 2);
    }

    #[test]
    fn a_panicking_call_drops_captures_once() {
        for boxed in [false, true] {
            let drops = Rc::new(Cell::new(0));
            let p = Probe(drops.clone());
            let big = [0u64; 4];
            let f = if boxed {
                InlineFnOnce::<()>::new(move |_| {
                    let _keep = (&p, big);
                    panic!("boom");
                })
            } else {
                InlineFnOnce::<()>::new(move |_| {
                    let _keep = &p;
                    panic!("boom");
                })
            };
            assert_eq!(f.is_inline(), !boxed);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.call(&())));
            assert!(r.is_err());
            assert_eq!(drops.get(), 1);
        }
    }

    #[test]
    fn send_version_crosses_threads_and_converts() {
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        let f = InlineSendFnOnce::<usize>::new(move |n: &usize| {
            h.fetch_add(*n, std::sync::atomic::Ordering::Relaxed);
        });
        assert!(f.is_inline());
        let f = std::thread::spawn(move || f).join().unwrap();
        InlineFnOnce::from(f).call(&4);
        assert_eq!(hits.load(std::sync::atomic::Ordering::Relaxed), 4);
    }

    #[test]
    fn sizes() {
        assert_eq!(size_of::<InlineFnOnce<()>>(), 3 * size_of::<usize>());
        assert_eq!(
            size_of::<Option<InlineFnOnce<()>>>(),
            3 * size_of::<usize>()
        );
    }
}
