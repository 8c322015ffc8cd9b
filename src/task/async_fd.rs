//! [`Async<T>`]: an fd-backed I/O object driven by the loop (async-io's design on our reactor).
//!
//! The fd is registered once, in [`Mode::Oneshot`](crate::Mode::Oneshot) with an empty
//! interest. A future that finds the fd not ready stores its waker and *arms* the
//! registration for its direction ([`update_handler_with`](crate::IoLoop::update_handler_with));
//! the reactor reports the fd once, the handler wakes the waiting task(s) and re-arms only for a
//! direction still waited on. Nothing polls in a loop, and a wait costs one `modify` and no
//! allocation.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};

use super::{current, IoLoop, LoopOps, Poller};
use crate::{Interest, Ready};

/// One direction (read or write) of a source: its waiting task and its readiness count.
#[derive(Default)]
struct Direction {
    waker: RefCell<Option<Waker>>,
    /// Bumped each time the reactor reports this direction ready.
    tick: Cell<u64>,
    /// The tick when the current wait began (`None`: no wait in progress).
    start: Cell<Option<u64>>,
}

impl Direction {
    fn fire(&self) {
        self.tick.set(self.tick.get().wrapping_add(1));
        let w = self.waker.borrow_mut().take();
        if let Some(w) = w {
            w.wake();
        }
    }

    fn waiting(&self) -> bool {
        self.waker.borrow().is_some()
    }

    fn set_waker(&self, waker: &Waker) {
        let mut slot = self.waker.borrow_mut();
        match &*slot {
            Some(old) if old.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }
}

/// The reactor-side state of an [`Async`]: shared with the fd's handler.
pub(crate) struct IoSource {
    pub(crate) fd: RawFd,
    /// What the Oneshot registration is armed for right now.
    pub(crate) armed: Cell<Interest>,
    read: Direction,
    write: Direction,
}

impl IoSource {
    /// Called by the fd's handler: wakes the directions `ready` covers (errors and hang-ups
    /// wake both, so the next operation reports them) and returns the interest still waited
    /// on, which the handler re-arms.
    pub(crate) fn on_ready(&self, ready: Ready) -> Interest {
        self.armed.set(Interest::empty());
        let both = ready.intersects(Ready::ERROR | Ready::HUP);
        let mut rest = Interest::empty();
        if both || ready.contains(Ready::READABLE) {
            self.read.fire();
        } else if self.read.waiting() {
            rest |= Interest::READABLE;
        }
        if both || ready.contains(Ready::WRITABLE) {
            self.write.fire();
        } else if self.write.waiting() {
            rest |= Interest::WRITABLE;
        }
        rest
    }
}

/// An I/O object (socket, pipe, terminal...) registered on a loop, with futures that wait for
/// it to be readable or writable.
///
/// [`Async::new`] puts the fd in non-blocking mode and registers it on the *current loop*
/// (the one running the calling task; see [`crate::task`]); [`Async::with_loop`] names the
/// loop instead. Operations follow async-io's pattern: try the non-blocking operation, and on
/// `WouldBlock` wait for readiness and try again ([`read_with`](Self::read_with),
/// [`write_with`](Self::write_with)). With the `futures-io` feature (on by default) `Async<T>`
/// and `&Async<T>` implement `AsyncRead`/`AsyncWrite` when `T`/`&T` implement `Read`/`Write`.
///
/// One task at a time may wait for each direction: a second reader replaces the first one's
/// waker (one reader task and one writer task at once is fine).
///
/// An `Async` belongs to the loop's thread (it is not `Send`). Dropping it removes the fd's
/// handler, then closes the fd. It keeps only a weak reference to its loop: if the loop is
/// dropped first, its waits fail with `NotConnected` and dropping it just closes the fd.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
/// use ioloop::{Async, IoLoop};
///
/// let lp = IoLoop::new()?;
/// lp.block_on(async {
///     let (a, b) = Async::<UnixStream>::pair()?;
///     let reader = ioloop::spawn(async move {
///         let mut buf = [0; 5];
///         let n = b.read_with(|mut s| s.read(&mut buf)).await?;
///         std::io::Result::Ok(buf[..n].to_vec())
///     });
///     a.write_with(|mut s| s.write(b"hello")).await?;
///     assert_eq!(reader.await.unwrap()?, b"hello");
///     std::io::Result::Ok(())
/// })??;
/// # std::io::Result::Ok(())
/// ```
pub struct Async<T: AsFd> {
    source: Rc<IoSource>,
    ops: Rc<dyn LoopOps>,
    /// `None` only after `into_inner` (and during drop).
    io: Option<T>,
}

// `Async` never pins its `T`: every method reaches it through `&`/`&mut`.
impl<T: AsFd> Unpin for Async<T> {}

fn no_loop() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "no current IoLoop: create Async values inside a task or block_on, or use Async::with_loop",
    )
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

impl<T: AsFd> Async<T> {
    /// Puts `io`'s fd in non-blocking mode and registers it on the current loop.
    ///
    /// # Errors
    ///
    /// `NotConnected` outside a running loop (use [`with_loop`](Self::with_loop) there), and
    /// what registering reports: `AlreadyExists` if the fd has a handler on that loop,
    /// `EPERM` for a regular file on epoll, `InvalidInput` for an fd >= `FD_SETSIZE` on select.
    pub fn new(io: T) -> io::Result<Self> {
        let ops = current().ok_or_else(no_loop)?;
        Self::register(ops, io)
    }

    /// Puts `io`'s fd in non-blocking mode and registers it on `lp`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new), except for `NotConnected`.
    pub fn with_loop<P: Poller>(lp: &IoLoop<P>, io: T) -> io::Result<Self> {
        Self::register(lp.ops().clone(), io)
    }

    fn register(ops: Rc<dyn LoopOps>, io: T) -> io::Result<Self> {
        set_nonblocking(io.as_fd())?;
        let source = Rc::new(IoSource {
            fd: io.as_fd().as_raw_fd(),
            armed: Cell::new(Interest::empty()),
            read: Direction::default(),
            write: Direction::default(),
        });
        ops.add_source(source.clone())?;
        Ok(Self {
            source,
            ops,
            io: Some(io),
        })
    }

    /// The I/O object.
    pub fn get_ref(&self) -> &T {
        self.io.as_ref().expect("Async used after into_inner")
    }

    /// The I/O object, mutably. Do not replace or close its fd: the loop keeps watching the
    /// fd number until the `Async` is dropped.
    pub fn get_mut(&mut self) -> &mut T {
        self.io.as_mut().expect("Async used after into_inner")
    }

    /// Removes the fd from the loop and gives the I/O object back (still non-blocking).
    ///
    /// # Errors
    ///
    /// What removing the handler reports.
    pub fn into_inner(mut self) -> io::Result<T> {
        let io = self.io.take().expect("Async used after into_inner");
        self.ops.remove_source(self.source.fd)?;
        Ok(io)
    }

    /// Waits until the fd is reported readable (or at end of file, or in error). May be
    /// spurious: the next read can still return `WouldBlock`.
    ///
    /// # Errors
    ///
    /// What re-arming the registration reports; `NotConnected` if the loop is gone.
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_readable(cx)).await
    }

    /// Waits until the fd is reported writable (or in error). May be spurious.
    ///
    /// # Errors
    ///
    /// As [`readable`](Self::readable).
    pub async fn writable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_writable(cx)).await
    }

    /// Polls for readability (for hand-written futures and `poll_*` methods): `Ready` once
    /// the reactor has reported the fd readable since the wait began.
    ///
    /// # Errors
    ///
    /// As [`readable`](Self::readable).
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_dir(&self.source, &*self.ops, Interest::READABLE, cx)
    }

    /// Polls for writability; see [`poll_readable`](Self::poll_readable).
    ///
    /// # Errors
    ///
    /// As [`readable`](Self::readable).
    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_dir(&self.source, &*self.ops, Interest::WRITABLE, cx)
    }

    /// Runs the non-blocking `op` until it does not return `WouldBlock`, waiting for
    /// readability in between.
    ///
    /// # Errors
    ///
    /// What `op` returns (other than `WouldBlock`), or what waiting reports.
    pub async fn read_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.io_with(Interest::READABLE, op).await
    }

    /// [`read_with`](Self::read_with) with `&mut T`.
    ///
    /// # Errors
    ///
    /// As [`read_with`](Self::read_with).
    pub async fn read_with_mut<R>(
        &mut self,
        op: impl FnMut(&mut T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.io_with_mut(Interest::READABLE, op).await
    }

    /// Runs the non-blocking `op` until it does not return `WouldBlock`, waiting for
    /// writability in between.
    ///
    /// # Errors
    ///
    /// What `op` returns (other than `WouldBlock`), or what waiting reports.
    pub async fn write_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.io_with(Interest::WRITABLE, op).await
    }

    /// [`write_with`](Self::write_with) with `&mut T`.
    ///
    /// # Errors
    ///
    /// As [`write_with`](Self::write_with).
    pub async fn write_with_mut<R>(
        &mut self,
        op: impl FnMut(&mut T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.io_with_mut(Interest::WRITABLE, op).await
    }

    /// The one "try; on `WouldBlock` await readiness in `dir`" loop behind the `*_with`s.
    async fn io_with<R>(
        &self,
        dir: Interest,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        loop {
            match op(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                res => return res,
            }
            poll_fn(|cx| poll_dir(&self.source, &*self.ops, dir, cx)).await?;
        }
    }

    /// [`io_with`](Self::io_with) with `&mut T`.
    async fn io_with_mut<R>(
        &mut self,
        dir: Interest,
        mut op: impl FnMut(&mut T) -> io::Result<R>,
    ) -> io::Result<R> {
        loop {
            match op(self.get_mut()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                res => return res,
            }
            poll_fn(|cx| poll_dir(&self.source, &*self.ops, dir, cx)).await?;
        }
    }

    /// A new `Async` for `io` on the same loop as `self`.
    fn sibling<U: AsFd>(&self, io: U) -> io::Result<Async<U>> {
        Async::register(self.ops.clone(), io)
    }
}

impl<T: AsFd> AsFd for Async<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().as_fd()
    }
}

impl<T: AsFd> AsRawFd for Async<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.source.fd
    }
}

impl<T: AsFd> Drop for Async<T> {
    fn drop(&mut self) {
        if self.io.is_some() {
            // Deregister before the fd is closed (when `io` drops right after).
            let _ = self.ops.remove_source(self.source.fd);
        }
    }
}

impl<T: AsFd + fmt::Debug> fmt::Debug for Async<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Async").field("io", &self.io).finish()
    }
}

impl Async<TcpListener> {
    /// Binds a listener (address resolution, if `addr` needs any, blocks) and registers it on
    /// the current loop.
    ///
    /// # Errors
    ///
    /// What `bind` reports; see [`Async::new`].
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Async::new(TcpListener::bind(addr)?)
    }

    /// Accepts a connection; the stream is registered on the listener's loop.
    ///
    /// # Errors
    ///
    /// What `accept` reports (for example `EMFILE`), or what registering the stream reports.
    pub async fn accept(&self) -> io::Result<(Async<TcpStream>, SocketAddr)> {
        let (stream, addr) = self.read_with(TcpListener::accept).await?;
        Ok((self.sibling(stream)?, addr))
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// What `getsockname` reports.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().local_addr()
    }
}

impl Async<TcpStream> {
    /// Connects to `addr` without blocking the loop (a non-blocking `connect`, then a wait for
    /// writability), registered on the current loop.
    ///
    /// # Errors
    ///
    /// `NotConnected` outside a running loop; the connection's error (`ConnectionRefused`...).
    pub async fn connect(addr: impl Into<SocketAddr>) -> io::Result<Self> {
        use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage};
        let addr = addr.into();
        let family = match addr {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let fd = socket::socket(family, SockType::Stream, SockFlag::empty(), None)?;
        fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        set_nonblocking(fd.as_fd())?;
        let stream = Async::new(TcpStream::from(fd))?;
        match socket::connect(stream.as_raw_fd(), &SockaddrStorage::from(addr)) {
            Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
            Err(e) => return Err(e.into()),
        }
        stream.writable().await?;
        if let Some(e) = stream.get_ref().take_error()? {
            return Err(e);
        }
        // Writable without a pending error but not connected (e.g. a hang-up): report it.
        stream.get_ref().peer_addr()?;
        Ok(stream)
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// What `getpeername` reports.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().peer_addr()
    }
}

impl Async<UnixStream> {
    /// A connected pair of Unix stream sockets, both registered on the current loop.
    ///
    /// # Errors
    ///
    /// What `socketpair` reports; see [`Async::new`].
    pub fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = UnixStream::pair()?;
        let a = Async::new(a)?;
        let b = a.sibling(b)?;
        Ok((a, b))
    }
}

impl Async<UdpSocket> {
    /// Binds a UDP socket and registers it on the current loop.
    ///
    /// # Errors
    ///
    /// What `bind` reports; see [`Async::new`].
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Async::new(UdpSocket::bind(addr)?)
    }

    /// Sends a datagram to `addr`.
    ///
    /// # Errors
    ///
    /// What `sendto` reports.
    pub async fn send_to(&self, buf: &[u8], addr: impl Into<SocketAddr>) -> io::Result<usize> {
        let addr = addr.into();
        self.write_with(|s| s.send_to(buf, addr)).await
    }

    /// Receives a datagram; returns its length and sender.
    ///
    /// # Errors
    ///
    /// What `recvfrom` reports.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.read_with(|s| s.recv_from(buf)).await
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// What `getsockname` reports.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().local_addr()
    }
}

/// Waits for one direction (`interest` is `READABLE` or `WRITABLE`): `Ready` once the reactor
/// has reported it since the wait began; else stores the waker and arms the registration.
fn poll_dir(
    src: &IoSource,
    ops: &dyn LoopOps,
    interest: Interest,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    let dir = if interest == Interest::READABLE {
        &src.read
    } else {
        &src.write
    };
    match dir.start.get() {
        Some(start) if start != dir.tick.get() => {
            dir.start.set(None);
            return Poll::Ready(Ok(()));
        }
        Some(_) => {}
        None => dir.start.set(Some(dir.tick.get())),
    }
    dir.set_waker(cx.waker());
    let armed = src.armed.get();
    if !armed.contains(interest) {
        if let Err(e) = ops.arm(src.fd, armed | interest) {
            dir.waker.borrow_mut().take();
            dir.start.set(None);
            return Poll::Ready(Err(e));
        }
        src.armed.set(armed | interest);
    }
    Poll::Pending
}

/// `poll_read` on async-io's pattern: try, and on `WouldBlock` wait for readiness.
#[cfg(feature = "futures-io")]
fn poll_op<R>(
    mut op: impl FnMut() -> io::Result<R>,
    mut wait: impl FnMut(&mut Context<'_>) -> Poll<io::Result<()>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<R>> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            res => return Poll::Ready(res),
        }
        match wait(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
}

#[cfg(feature = "futures-io")]
mod futures_io_impls {
    use super::*;
    use std::io::{Read, Write};
    use std::pin::Pin;

    impl<T: AsFd + Read> futures_io::AsyncRead for Async<T> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let Async { source, ops, io } = self.get_mut();
            let io = io.as_mut().expect("Async used after into_inner");
            poll_op(
                || io.read(buf),
                |cx| poll_dir(source, &**ops, Interest::READABLE, cx),
                cx,
            )
        }
    }

    impl<T: AsFd> futures_io::AsyncRead for &Async<T>
    where
        for<'a> &'a T: Read,
    {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let this: &Async<T> = self.get_mut();
            poll_op(|| this.get_ref().read(buf), |cx| this.poll_readable(cx), cx)
        }
    }

    impl<T: AsFd + Write> futures_io::AsyncWrite for Async<T> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let Async { source, ops, io } = self.get_mut();
            let io = io.as_mut().expect("Async used after into_inner");
            poll_op(
                || io.write(buf),
                |cx| poll_dir(source, &**ops, Interest::WRITABLE, cx),
                cx,
            )
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let Async { source, ops, io } = self.get_mut();
            let io = io.as_mut().expect("Async used after into_inner");
            poll_op(
                || io.flush(),
                |cx| poll_dir(source, &**ops, Interest::WRITABLE, cx),
                cx,
            )
        }

        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.poll_flush(cx)
        }
    }

    impl<T: AsFd> futures_io::AsyncWrite for &Async<T>
    where
        for<'a> &'a T: Write,
    {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this: &Async<T> = self.get_mut();
            poll_op(
                || this.get_ref().write(buf),
                |cx| this.poll_writable(cx),
                cx,
            )
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this: &Async<T> = self.get_mut();
            poll_op(|| this.get_ref().flush(), |cx| this.poll_writable(cx), cx)
        }

        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.poll_flush(cx)
        }
    }
}
