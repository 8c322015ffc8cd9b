//! Every backend and the notifier can be shared across threads.

#![allow(dead_code)]

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}

#[test]
fn backends_are_send_and_sync() {
    #[cfg(ioloop_has_epoll)]
    {
        assert_send::<ioloop_sys::Epoll>();
        assert_sync::<ioloop_sys::Epoll>();
    }
    #[cfg(ioloop_has_kqueue)]
    {
        assert_send::<ioloop_sys::Kqueue>();
        assert_sync::<ioloop_sys::Kqueue>();
    }
    #[cfg(ioloop_has_uring)]
    {
        assert_send::<ioloop_sys::Uring>();
        assert_sync::<ioloop_sys::Uring>();
    }
    assert_send::<ioloop_sys::Poll>();
    assert_sync::<ioloop_sys::Poll>();
    assert_send::<ioloop_sys::Select>();
    assert_sync::<ioloop_sys::Select>();
    assert_send::<ioloop_sys::DefaultPoller>();
    assert_sync::<ioloop_sys::DefaultPoller>();
}

#[test]
fn notifier_and_events_are_send_and_sync() {
    assert_send::<ioloop_sys::Notifier>();
    assert_sync::<ioloop_sys::Notifier>();
    assert_send::<ioloop_sys::Events>();
    assert_sync::<ioloop_sys::Events>();
    assert_send::<ioloop_sys::Event>();
    assert_sync::<ioloop_sys::Event>();
}
